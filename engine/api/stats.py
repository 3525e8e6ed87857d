"""The analytics endpoints: ``GET /v1/journeys``, ``/v1/journeys/{id}/stats`` and ``/v1/stages/funnel``.

Thin doors on :mod:`engine.analytics`, which ``journey stats`` and ``journey funnel`` call too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engine.analytics import MAX_VERSION, journey_stats_now, journeys_now, stage_funnel_now
from engine.api import spec
from engine.services import Services


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


#: ``since`` and ``until``: a time, or a duration back from now. Either form; the rule that
#: since comes before until (400 otherwise) is one OpenAPI cannot state.
_MOMENT: dict[str, Any] = {"anyOf": [
    {"type": "string", "format": "date-time"},
    {"type": "string", "pattern": r"^\s*(\d+[smhdwSMHDW])+\s*$"},
]}
# Examples a generator starts from (schemathesis' coverage phase): a window that holds.
_WINDOW = [
    spec.query("since", {**_MOMENT, "examples": ["30d"]},
               "the start of the window: an ISO time, or a duration back from now such as 30d (default 30d)"),
    spec.query("until", {**_MOMENT, "examples": ["1s"]}, "the end of the window, after since: an ISO time or a duration back from now (default now)"),
]


#: A deployed journey's id; the example is the journey the project ships (journeys/nps_survey.yaml).
JourneyId = Annotated[str, Path(description="a deployed journey's id", examples=["nps_survey"])]


def _doc(*statuses: int, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The OpenAPI of an analytics endpoint: an admin or read key, a JSON object, ``statuses``."""
    return {"security": spec.ADMIN_SECURITY, "parameters": parameters or [],
            **spec.responses({"type": "object"}, *statuses, 401, 403)}


def add_routes(app: FastAPI, services: Services, authenticate: Callable[..., Awaitable[Any]],
               key: Callable[[Request], str | None]) -> None:
    """Register the analytics endpoints on ``app``; every one needs an admin or read key (``key`` reads it)."""

    @app.get("/v1/journeys", openapi_extra=_doc())
    async def list_journeys(request: Request) -> _JSON:
        """The deployed journeys: status, current version, every version, active enrollments."""
        await authenticate(key(request), read=True)
        return _JSON({"journeys": await run_in_threadpool(journeys_now, services)})

    @app.get("/v1/journeys/{journey_id}/stats", openapi_extra=_doc(400, 404, parameters=[
        *_WINDOW,
        spec.query("version", {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}, "one version (default all)"),
        spec.query("min_sample", {"type": "integer", "minimum": 2, "maximum": MAX_VERSION},
                   "customers a variant needs before it is compared (default 100)"),
    ]))
    async def journey_stats(journey_id: JourneyId, request: Request) -> _JSON:
        """Per step: entered, waiting, exited by reason, deliveries by status; per split variant: the
        comparison with control. ``since``/``until`` (ISO time or ``30d`` back; whole UTC days of
        enrollment starts), ``version``, ``min_sample``. The conversion window is the goal's ``within``."""
        await authenticate(key(request), read=True)
        params = dict(request.query_params)
        return _JSON(await run_in_threadpool(journey_stats_now, services, journey_id, params))  # type: ignore[arg-type]

    @app.get("/v1/stages/funnel", openapi_extra=_doc(400, parameters=_WINDOW))
    async def stage_funnel(request: Request) -> _JSON:
        """Customers in each stage now; moves, time in stage and drop-off in ``since``/``until``."""
        await authenticate(key(request), read=True)
        return _JSON(await run_in_threadpool(stage_funnel_now, services, dict(request.query_params)))
