"""The analytics endpoints: ``GET /v1/journeys``, ``/v1/journeys/{id}/stats`` and ``/v1/stages/funnel``.

Thin doors on :mod:`engine.analytics`, which ``journey stats`` and ``journey funnel`` call too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engine.analytics import journey_stats_now, journeys_now, stage_funnel_now
from engine.services import Services


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def add_routes(app: FastAPI, services: Services, authenticate: Callable[..., Awaitable[Any]],
               key: Callable[[Request], str | None]) -> None:
    """Register the analytics endpoints on ``app``; every one needs an admin or read key (``key`` reads it)."""

    @app.get("/v1/journeys")
    async def list_journeys(request: Request) -> _JSON:
        """The deployed journeys: status, current version, every version, active enrollments."""
        await authenticate(key(request), read=True)
        return _JSON({"journeys": await run_in_threadpool(journeys_now, services)})

    @app.get("/v1/journeys/{journey_id}/stats")
    async def journey_stats(journey_id: str, request: Request) -> _JSON:
        """Per step: entered, waiting, exited by reason, deliveries by status; per split variant: the
        comparison with control. ``since``/``until`` (ISO time or ``30d`` back), ``version``, ``window``
        (conversion window, default 30d), ``min_sample``."""
        await authenticate(key(request), read=True)
        params = dict(request.query_params)
        return _JSON(await run_in_threadpool(journey_stats_now, services, journey_id, params))  # type: ignore[arg-type]

    @app.get("/v1/stages/funnel")
    async def stage_funnel(request: Request) -> _JSON:
        """Customers in each stage now; moves, time in stage and drop-off in ``since``/``until``."""
        await authenticate(key(request), read=True)
        return _JSON(await run_in_threadpool(stage_funnel_now, services, dict(request.query_params)))
