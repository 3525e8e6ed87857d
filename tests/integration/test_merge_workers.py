"""A profile merge on the real path: the API, a dramatiq worker on Redis, PostgreSQL (docs/runtime.md, "Merges").

Margaret is known; she checks out once as herself and once anonymously; then one batch
identifies the anonymous id as hers and brings her order. The worker applies the batch in
one transaction (:func:`engine.workers.actors.apply_events`): the merge hands the
visitor's enrollment to her, the younger of her two exits as ``merged``, and the order
converts the older, so no reminder goes out.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from engine import deploy
from engine.api import create_app
from engine.storage.models import Delivery, Enrollment
from engine.twin import VirtualClock, fast_forward, stub_channels
from tests.conftest import REDIS_URL, create_key, make_services, pg_schema, redis_prefix
from tests.integration.settle import settle

pytestmark = pytest.mark.integration

JOURNEY = Path(__file__).resolve().parents[2] / "journeys" / "cart_abandonment.yaml"
START = dt.datetime(2024, 5, 6, 10, tzinfo=dt.timezone.utc)  # a Monday, 10:00 UTC: no quiet hours
CART = {"cart_value": 120.5, "currency": "EUR", "item_count": 2}


def at(minutes: int) -> str:
    return (START + dt.timedelta(minutes=minutes)).isoformat()


STREAM = [
    ("identify", {"userId": "margaret", "traits": {"first_name": "Margaret", "email": "m@example.com"},
                  "timestamp": at(0)}),
    ("track", {"userId": "margaret", "event": "checkout_started", "properties": {**CART, "order_id": "o-1"},
               "timestamp": at(5)}),
    ("track", {"anonymousId": "visitor-1", "event": "checkout_started", "properties": {**CART, "order_id": "o-2"},
               "timestamp": at(10)}),
    ("batch", {"batch": [
        {"type": "identify", "anonymousId": "visitor-1", "userId": "margaret", "traits": {}, "timestamp": at(20)},
        {"type": "track", "userId": "margaret", "event": "order_completed", "properties": {"order_id": "o-1"},
         "timestamp": at(20)},
    ]}),
]


def test_a_merge_in_a_batch_hands_the_enrollment_over_and_the_order_converts_the_older():
    with pg_schema() as url, redis_prefix() as namespace:
        services = make_services(url, redis_url=REDIS_URL, namespace=namespace, secret="d" * 32, rate_limits={})
        clock = VirtualClock(START)
        services.clock = clock
        services.adapters.update(stub_channels())
        try:
            with services.sessions.begin() as session:
                deploy.deploy(session, [deploy.snapshot(JOURNEY)], clock.current)
            auth = {"Authorization": "Basic " + base64.b64encode(f"{create_key(services)}:".encode()).decode()}
            worker = dramatiq.Worker(services.broker, worker_timeout=50, worker_threads=services.settings.worker_threads)
            worker.start()
            try:
                wait = lambda: settle(services)  # noqa: E731
                with TestClient(create_app(services)) as client:
                    for kind, body in STREAM:
                        moment = dt.datetime.fromisoformat(body.get("timestamp") or body["batch"][0]["timestamp"])
                        fast_forward(services, clock, moment, wait, inclusive=False)
                        clock.current = moment
                        response = client.post(f"/v1/{kind}", json=body, headers=auth)
                        assert response.status_code == 200, response.text
                        wait()
                fast_forward(services, clock, clock.current + dt.timedelta(days=10), wait)
            finally:
                worker.stop()
            with services.sessions() as session:
                enrollments = session.execute(
                    select(Enrollment).order_by(Enrollment.started_at)).scalars().all()
                sends = session.execute(select(Delivery.step, Delivery.status)).all()
            assert [(e.state["trigger"]["properties"]["order_id"], e.status, e.state["reason"]) for e in enrollments] == [
                ("o-1", "converted", "goal:order_completed"), ("o-2", "exited", "merged")]
            assert len({e.customer_id for e in enrollments}) == 1  # both are margaret's now
            assert sends == []  # no reminder for either cart
        finally:
            services.close()
