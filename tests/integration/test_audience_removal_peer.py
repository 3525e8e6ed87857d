"""Audience removal end to end: a Dramatiq worker on PostgreSQL and Redis, the real
retargeting adapter configured from the environment, and an audiences API on loopback.

Given a journey that adds each customer to two audiences and takes them out on its goal
(an order) or its exit event (an account deleted), with no remove step of its own; when
customers enter, then order, leave or order twice; then the audiences API has received
each add once and each removal once, also for customers who unsubscribed from the
channel or were suppressed in between (a removal is not marketing).
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from channels.retargeting import sha256_hex
from channels.settings import ChannelSettings
from engine import deploy
from engine.api import create_app
from engine.policy import record_consent, suppress
from engine.queues import queue_depths
from engine.services import Services
from engine.delivery import UNSETTLED
from engine.storage.models import Customer, Delivery, Event
from tests.conftest import REDIS_URL, create_key, make_services
from tests.integration.channels.peers import HttpPeer, Reply, http_peer

pytestmark = pytest.mark.integration

JOURNEY = """\
id: audience_removal
name: Audiences left on the goal and on exit
stage: consideration
trigger:
  event: checkout_started
goal:
  event: order_completed
exit_on:
  - event: account_deleted
policy: {kind: marketing, topic: carts}
steps:
  - id: join_carts
    send: {channel: retargeting, audience: carts, action: add}
  - id: join_browsers
    send: {channel: retargeting, audience: browsers, action: add}
  - id: pause
    wait: 3d
  - id: join_late
    send: {channel: retargeting, audience: late, action: add}
"""

#: Who does what after entering, and whether they are still in the journey at the end.
CUSTOMERS = {"ada": ["order_completed"], "grace": ["account_deleted"], "linus": ["order_completed", "order_completed"],
             "hedy": []}


@pytest.fixture
def audience_peer() -> Iterator[HttpPeer]:
    with contextmanager(http_peer)("127.0.0.1", Reply(200, {"id": "op_1"})) as peer:
        yield peer


@pytest.fixture
def engine(tmp_path: Path, pg_url: str, redis_namespace: str, audience_peer: HttpPeer) -> Iterator[tuple[Services, TestClient, dict[str, str]]]:
    """The journey deployed on PostgreSQL, a worker on Redis, the audiences API at the peer."""
    environment = {"AUDIENCE_API_URL": f"{audience_peer.url}/v1", "AUDIENCE_API_TOKEN": "audience-token",
                   "CHANNEL_TIMEOUT": "5s"}
    services = make_services(pg_url, ChannelSettings.from_env(environment), redis_url=REDIS_URL,
                             namespace=redis_namespace)
    path = tmp_path / "audience_removal.yaml"
    path.write_text(JOURNEY, encoding="utf-8")
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], datetime.now(timezone.utc))
    key = create_key(services)
    worker = dramatiq.Worker(services.broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        with TestClient(create_app(services)) as client:
            yield services, client, {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    finally:
        worker.stop()
        services.close()


def settle(services: Services, timeout: float = 60.0) -> None:
    """Wait until the worker has done all the work there is, as the database and the queues tell."""
    deadline = time.monotonic() + timeout
    while True:
        with services.sessions() as session:
            busy = session.execute(select(func.count()).select_from(Event).where(Event.processed_at.is_(None))).scalar_one()
            busy += session.execute(
                select(func.count()).select_from(Delivery).where(Delivery.status.in_(UNSETTLED))
            ).scalar_one()
        busy += sum(depth.ready + depth.in_flight for depth in queue_depths(services.broker))
        if not busy:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{busy} pieces of work still pending after {timeout:.0f}s")
        time.sleep(0.05)


def test_every_add_and_every_removal_reaches_the_audiences_api_once(engine, audience_peer: HttpPeer):
    services, client, auth = engine

    def track(user: str, name: str, n: int) -> None:
        body = {"userId": user, "event": name, "messageId": f"{user}-{name}-{n}", "properties": {}}
        response = client.post("/v1/track", json=body, headers=auth)
        assert response.status_code == 200, response.text
        settle(services)

    # Given four customers in the journey, each added to two audiences
    for user in CUSTOMERS:
        response = client.post("/v1/identify", json={"userId": user, "traits": {"email": f"{user}@example.com"},
                                                     "messageId": f"{user}-identify"}, headers=auth)
        assert response.status_code == 200, response.text
        track(user, "checkout_started", 0)
    # and two who no longer want marketing: unsubscribed from the channel, or suppressed
    now = datetime.now(timezone.utc)
    with services.sessions.begin() as session:
        ids = dict(session.execute(select(Customer.external_id, Customer.id)).all())
        record_consent(session, ids["ada"], "retargeting", "*", False, "preference centre", now)
        suppress(session, "*", "manual", now, customer_id=ids["linus"])

    # When they order, leave, order twice, or do nothing
    for user, events in CUSTOMERS.items():
        for n, name in enumerate(events, start=1):
            track(user, name, n)

    # Then each add and each removal arrived once, under its own idempotency key
    calls = Counter(
        (request.json()["action"], request.path.removeprefix("/v1/audiences/").removesuffix("/members"),
         request.json()["members"][0]["email_sha256"], request.headers["idempotency-key"])
        for request in audience_peer.requests
    )
    assert all(count == 1 for count in calls.values()), calls
    who = {sha256_hex(f"{user}@example.com"): user for user in CUSTOMERS}
    assert sorted((action, audience, who[member]) for action, audience, member, _ in calls) == sorted(
        [(action, audience, user) for user in CUSTOMERS for audience in ("carts", "browsers")
         for action in ("add", "remove") if action == "add" or user != "hedy"]
    )
    assert all(key.endswith(f":leave:{audience}") for action, audience, _, key in calls if action == "remove")
    with services.sessions() as session:
        statuses = Counter(session.execute(select(Delivery.status)).scalars())
    assert statuses == {"sent": 14}
