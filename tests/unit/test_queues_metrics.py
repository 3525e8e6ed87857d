"""``journey queues``, :mod:`engine.queues` and ``GET /metrics``: what waits where, on the
StubBroker and on a real Redis."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import dramatiq
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from starlette.testclient import TestClient

from engine.api import create_app
from engine.cli import main
from engine.queues import QueueDepth, backlog, queue_depths
from engine.storage.models import Delivery, Event, Timer
from tests.backlog import build_backlog
from tests.conftest import REDIS_URL, close_services, create_key, free_port, make_services
from tests.unit.test_journeys_e2e import engine  # noqa: F401 - the fixture

__all__ = ["engine"]


def fill_queues(services, *, hold: threading.Event) -> tuple[str, dramatiq.Worker]:  # type: ignore[no-untyped-def]
    """Given 2 ready and 1 delayed message on ``events`` (no worker consumes it), and on a
    queue of this test's own one message dead-lettered and one in flight (held by ``hold``)."""
    services.actors.process_events.send([1])
    services.actors.process_events.send([2])
    services.actors.process_events.send_with_options(args=([3],), delay=600_000)
    queue = f"t-{uuid.uuid4().hex[:8]}"
    started = threading.Event()

    def work(kind: str) -> None:
        if kind == "fail":
            raise RuntimeError("boom")
        started.set()
        hold.wait(30)

    actor = dramatiq.actor(work, broker=services.broker, actor_name=f"work_{queue}", queue_name=queue, max_retries=0)
    worker = dramatiq.Worker(services.broker, queues={queue}, worker_timeout=50, worker_threads=1)
    worker.start()
    actor.send("fail")
    deadline = time.monotonic() + 10
    while not any(d.dead for d in queue_depths(services.broker) if d.name == queue):
        assert time.monotonic() < deadline, "the failing message was never dead-lettered"
        time.sleep(0.05)
    actor.send("hold")
    assert started.wait(10)
    return queue, worker


@pytest.fixture
def hold():  # type: ignore[no-untyped-def]
    released = threading.Event()
    yield released
    released.set()


def test_stub_broker_depths(services, hold):
    queue, worker = fill_queues(services, hold=hold)
    try:
        depths = {d.name: d for d in queue_depths(services.broker)}
    finally:
        hold.set()
        worker.stop()
    assert depths["events"] == QueueDepth("events", ready=2, delayed=1, in_flight=0, dead=0)
    assert depths[queue] == QueueDepth(queue, ready=0, delayed=0, in_flight=1, dead=1)
    assert {"timers", "deliveries.email"} <= set(depths)
    assert not any(name.endswith((".DQ", ".XQ")) for name in depths)


@pytest.mark.integration
def test_redis_broker_depths_and_journey_queues(redis_services, hold, monkeypatch):
    services = redis_services
    queue, worker = fill_queues(services, hold=hold)
    try:
        depths = {d.name: d for d in queue_depths(services.broker)}
        # Another process (the CLI) never declared the test's queue: it finds it by its keys.
        monkeypatch.setenv("DATABASE_URL", services.settings.database_url)
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        monkeypatch.setenv("JOURNEY_NAMESPACE", services.settings.namespace)
        result = CliRunner().invoke(main, ["queues", "--json"], catch_exceptions=False)
    finally:
        hold.set()
        worker.stop()
    assert depths["events"] == QueueDepth("events", ready=2, delayed=1, in_flight=0, dead=0)
    assert depths[queue] == QueueDepth(queue, ready=0, delayed=0, in_flight=1, dead=1)
    assert result.exit_code == 0, result.output
    shown = {q["name"]: q for q in json.loads(result.stdout)["queues"]}
    assert shown["events"] == {"name": "events", "ready": 2, "delayed": 1, "in_flight": 0, "dead": 0}
    assert shown[queue] == {"name": queue, "ready": 0, "delayed": 0, "in_flight": 1, "dead": 1}


def test_backlog_counts_pending_events_due_timers_and_deliveries(engine):  # noqa: F811
    services, send, _ = engine
    send("identify", userId="bob", traits={"email": "bob@example.com", "first_name": "Bob"})
    send("track", userId="bob", event="checkout_started",
         properties={"cart_value": 80.0, "order_id": "o-9", "currency": "EUR", "item_count": 1})
    now = datetime.now(timezone.utc)
    with services.sessions.begin() as session:
        # the cart's one-hour wait fell due 90 minutes ago and was not fired
        session.execute(update(Timer).where(Timer.key.like("cart_abandonment:%")).values(due_at=now - timedelta(minutes=90)))
        # one event is not processed yet, another failed once
        ids = session.execute(select(Event.id).order_by(Event.id)).scalars().all()
        session.execute(update(Event).where(Event.id == ids[0]).values(processed_at=None))
        session.execute(update(Event).where(Event.id == ids[1]).values(processed_at=None, attempts=1))

    with services.sessions() as session:
        work = backlog(session, now)

    assert (work.events_pending, work.events_failing, work.timers_due) == (2, 1, 1)
    assert work.scheduler_lag_seconds == pytest.approx(90 * 60, abs=1)
    assert work.deliveries == {}  # nothing sent yet: the reminder comes after the wait

    result = run_queues(services)
    assert result.exit_code == 0
    assert re.search(r"\nevents pending   2 \(1 failing\)\ntimers due       1 \(scheduler lag 540\ds\)\ndeliveries       none\n$",
                     result.stdout)
    assert result.stdout.startswith("QUEUE ")
    assert "REDIS_URL is unset" in result.stderr
    assert "\nevents " in result.stdout


def run_queues(services, *args: str):  # type: ignore[no-untyped-def]
    env = {"DATABASE_URL": services.settings.database_url, "REDIS_URL": None}
    return CliRunner(env=env).invoke(main, ["queues", *args], catch_exceptions=False)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def scrape(client: TestClient, key: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=basic(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_need_an_admin_key(client, write_key, admin_key):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=basic(write_key)).status_code == 403
    assert client.get("/metrics", headers=basic(admin_key)).status_code == 200


def test_metrics_count_events_and_queue_messages(client, write_key, admin_key):
    for n in range(3):
        response = client.post("/v1/track", json={"userId": f"u{n}", "event": "Signed Up"}, headers=basic(write_key))
        assert response.status_code == 200

    metrics = scrape(client, admin_key)

    assert metrics[("journey_events_ingested_total", ())] == 3
    assert metrics[("journey_events_processed_total", ())] == 0
    assert metrics[("journey_events_pending", ())] == 3
    assert metrics[("journey_queue_messages", (("queue", "events"), ("state", "ready")))] == 3  # no worker ran
    assert metrics[("journey_queue_messages", (("queue", "events"), ("state", "dead")))] == 0
    assert metrics[("journey_scheduler_lag_seconds", ())] == 0


def test_metrics_show_enrollments_by_step_deliveries_and_scheduler_lag(engine):  # noqa: F811
    services, send, _ = engine
    send("identify", userId="bob", traits={"email": "bob@example.com", "first_name": "Bob"})
    send("track", userId="bob", event="checkout_started",
         properties={"cart_value": 80.0, "order_id": "o-9", "currency": "EUR", "item_count": 1})
    send("track", userId="bob", event="order_completed", properties={"order_id": "o-9", "total": 80.0})
    send("identify", userId="cy", traits={"email": "cy@example.com", "first_name": "Cy"})
    send("track", userId="cy", event="checkout_started",
         properties={"cart_value": 20.0, "order_id": "o-10", "currency": "EUR", "item_count": 1})
    with services.sessions.begin() as session:
        session.execute(update(Timer).where(Timer.key.like("winback:%"))
                        .values(due_at=datetime.now(timezone.utc) - timedelta(seconds=120)))

    with TestClient(create_app(services)) as client:
        metrics = scrape(client, create_key(services, "ops", admin=True))

    enrolled = {
        labels: value for (name, labels), value in metrics.items() if name == "journey_enrollments"
    }
    assert enrolled[(("journey", "cart_abandonment"), ("status", "converted"), ("step", ""))] == 1
    assert enrolled[(("journey", "cart_abandonment"), ("status", "active"), ("step", "wait_1h"))] == 1
    assert enrolled[(("journey", "order_followup"), ("status", "active"), ("step", "delivered"))] == 1
    assert enrolled[(("journey", "loyalty_points"), ("status", "completed"), ("step", ""))] == 1
    assert ("journey_deliveries", (("channel", "retargeting"), ("status", "sent"))) not in metrics  # bob: never added
    assert metrics[("journey_deliveries", (("channel", "email"), ("status", "failed")))] == 1  # order_thanks
    assert metrics[("journey_events_ingested_total", ())] == 5
    assert metrics[("journey_events_processed_total", ())] == 5
    assert metrics[("journey_timers_due", ())] == 1
    assert metrics[("journey_scheduler_lag_seconds", ())] == pytest.approx(120, abs=5)
    assert metrics[("journey_queue_messages", (("queue", "events"), ("state", "ready")))] == 0


def test_metrics_without_redis_still_serve_the_database_figures(sqlite_url, caplog):
    services = make_services(sqlite_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        with TestClient(create_app(services)) as client:
            metrics = scrape(client, create_key(services, "ops", admin=True))
    finally:
        close_services(services)
    assert metrics[("journey_events_ingested_total", ())] == 0
    assert not any(name == "journey_queue_messages" for name, _ in metrics)
    assert "could not read the queue depths" in caplog.text


def test_backlog_with_a_cap_counts_each_status_only_up_to_one_more_than_the_cap(any_services):
    # Given 7 pending deliveries, 2 of them made dead
    at = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    build_backlog(any_services, at, events=0, deliveries=7)
    with any_services.sessions.begin() as session:
        ids = session.execute(select(Delivery.id).order_by(Delivery.id).limit(2)).scalars().all()
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(status="dead"))

    # When the backlog is counted with a cap of 3, and without one
    with any_services.sessions() as session:
        capped, exact = backlog(session, at, cap=3), backlog(session, at)

    # Then a status past the cap reads cap + 1 (more than 3); below it, and without a cap, the counts are exact
    assert (capped.deliveries, capped.cap) == ({"pending": 4, "dead": 2}, 3)
    assert (exact.deliveries, exact.cap) == ({"pending": 5, "dead": 2}, None)
