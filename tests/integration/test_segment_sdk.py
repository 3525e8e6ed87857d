"""The real Segment Python SDK against a running engine on PostgreSQL and Redis."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from segment.analytics import Client
from sqlalchemy import func, select

from engine.storage.models import Event
from tests.integration.conftest import RunningEngine

pytestmark = pytest.mark.integration


def wait_processed(engine: RunningEngine, expected: int, timeout: float = 60.0) -> None:
    """Wait until ``expected`` events are stored and processed by the worker process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.services.sessions() as session:
            done = session.execute(
                select(func.count()).select_from(Event).where(Event.processed_at.is_not(None))
            ).scalar_one()
        if done >= expected:
            return
        time.sleep(0.2)
    raise TimeoutError(f"only {done} of {expected} events processed within {timeout}s")


def test_segment_sdk_events_arrive_exactly_once_with_traits_merged(running_engine: RunningEngine):
    errors: list[Exception] = []
    client = Client(
        running_engine.write_key,
        host=running_engine.url,
        on_error=lambda error, batch: errors.append(error),
        max_retries=2,
        upload_size=25,
    )
    # Given a visitor who browses anonymously, then signs up and shops
    sent = [
        client.page(anonymous_id="anon-42", name="Pricing", properties={"path": "/pricing"}),
        client.track(anonymous_id="anon-42", event="Product Viewed", properties={"sku": "SKU-1"}),
        client.identify(user_id="user-42", anonymous_id="anon-42", traits={"email": "ada@example.com", "plan": "free"}),
        client.screen(user_id="user-42", name="Checkout"),
        client.group(user_id="user-42", group_id="acme", traits={"seats": 10}),
    ]
    sent += [
        client.track(user_id="user-42", event="Order Completed", properties={"order_id": f"o-{i}", "total": 10 * i})
        for i in range(60)
    ]
    sent.append(client.identify(user_id="user-42", traits={"plan": "pro", "name": "Ada"}))
    sent.append(client.alias(previous_id="legacy-42", user_id="user-42"))
    client.flush()
    client.join()
    assert errors == []
    assert all(ok for ok, _ in sent)
    message_ids = [message["messageId"] for _, message in sent]

    # When the worker process has applied them
    wait_processed(running_engine, len(sent))

    # Then every event is stored exactly once
    with running_engine.services.sessions() as session:
        stored = list(session.execute(select(Event.message_id)).scalars())
    assert sorted(stored) == sorted(message_ids)

    # And the profile has the merged traits and the whole history
    response = httpx.get(f"{running_engine.url}/v1/customers/user-42", auth=(running_engine.admin_key, ""))
    assert response.status_code == 200
    profile = response.json()
    assert profile["traits"] == {"email": "ada@example.com", "plan": "pro", "name": "Ada"}
    assert sorted(profile["anonymousIds"]) == ["anon-42", "legacy-42"]  # workers may apply them in any order
    response = httpx.get(f"{running_engine.url}/v1/customers/anon-42", auth=(running_engine.admin_key, ""))
    assert response.json()["userId"] == "user-42"


def test_same_message_id_posted_20_times_concurrently_stores_one_row(running_engine: RunningEngine):
    body = {"userId": "u-1", "event": "Order Completed", "messageId": "dup-1", "properties": {"total": 5}}

    def post(_: int) -> int:
        return httpx.post(f"{running_engine.url}/v1/track", json=body, auth=(running_engine.write_key, "")).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(post, range(20)))
    assert statuses == [200] * 20
    with running_engine.services.sessions() as session:
        rows = session.execute(select(func.count()).select_from(Event).where(Event.message_id == "dup-1")).scalar_one()
    assert rows == 1
    wait_processed(running_engine, 1)


def test_auth_against_the_running_server(running_engine: RunningEngine):
    url = f"{running_engine.url}/v1/track"
    body = {"userId": "u-1", "event": "x"}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, auth=("je_write_nope", "")).status_code == 401
    customers = f"{running_engine.url}/v1/customers/u-1"
    assert httpx.get(customers, auth=(running_engine.write_key, "")).status_code == 403
