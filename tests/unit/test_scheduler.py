"""The sweeper re-enqueues events whose queue message was lost, and only those."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select, update

from engine import deploy, ingest
from engine import scheduler as scheduler_module
from engine.scheduler import Scheduler, pending_events
from engine.storage.models import Delivery, Event
from engine.workers.actors import MAX_EVENT_ATTEMPTS
from tests.backlog import build_backlog, times_carried
from tests.conftest import drain

T0 = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)

ROW = {
    "source": "app",
    "type": "track",
    "event": "Signed Up",
    "user_id": "u1",
    "properties": {},
    "traits": {},
    "context": {},
    "integrations": {},
}


def store_without_enqueue(services, count: int, received_at: datetime) -> None:  # type: ignore[no-untyped-def]
    """Commit events as the API does, but 'lose' their queue messages."""
    with services.sessions.begin() as session:
        for i in range(count):
            session.add(Event(**ROW, message_id=f"m{i}", timestamp=received_at, received_at=received_at))


def test_lost_events_are_swept_and_processed(any_services):
    now = datetime.now(timezone.utc)
    store_without_enqueue(any_services, 3, now - timedelta(minutes=5))
    scheduler = Scheduler(any_services)
    assert scheduler.sweep(now) == 3
    assert scheduler.sweep(now) == 0  # just enqueued: not again until the threshold passes
    drain(any_services)
    assert pending_events(any_services) == 0
    assert scheduler.sweep(now + timedelta(hours=1)) == 0  # processed: never again


def sweep_until_done(scheduler: Scheduler, now: datetime) -> None:
    """Sweep until a sweep finds nothing more to enqueue (a bounded sweep goes on where the last stopped)."""
    for _ in range(100):
        if scheduler.sweep(now) == 0:
            return
    raise AssertionError("the sweeps never ran out of work")


def test_a_backlog_waiting_on_its_queues_is_not_enqueued_again(any_services, monkeypatch):
    # Given events, due timers and deliveries enqueued, no worker taking them
    monkeypatch.setattr(scheduler_module, "SWEEP_BUDGET", 700)  # several sweeps to go through them
    build_backlog(any_services, T0, events=2000, timers=500, deliveries=500)
    # When the scheduler sweeps, long after JOURNEY_SWEEP_AFTER
    sweep_until_done(Scheduler(any_services), T0 + any_services.settings.sweep_after + timedelta(hours=1))
    # Then every row is still carried by exactly one message: none was enqueued again
    assert times_carried(any_services) == {("process_events", 1): 2000, ("fire_timers", 1): 500, ("deliver", 1): 500}


def test_a_backlog_whose_messages_were_lost_is_enqueued_once(any_services, monkeypatch):
    # Given the same backlog, its messages lost
    monkeypatch.setattr(scheduler_module, "SWEEP_BUDGET", 700)
    build_backlog(any_services, T0, events=2000, timers=500, deliveries=500)
    any_services.broker.flush_all()
    # When the scheduler sweeps until it finds nothing more
    sweep_until_done(Scheduler(any_services), T0 + any_services.settings.sweep_after + timedelta(hours=1))
    # Then every row is carried by exactly one message again
    assert times_carried(any_services) == {("process_events", 1): 2000, ("fire_timers", 1): 500, ("deliver", 1): 500}


def test_recent_events_are_left_to_their_messages(any_services):
    now = datetime.now(timezone.utc)
    store_without_enqueue(any_services, 2, now - timedelta(seconds=10))
    assert Scheduler(any_services).sweep(now) == 0


def test_events_that_keep_failing_are_left_for_an_operator(any_services):
    now = datetime.now(timezone.utc)
    store_without_enqueue(any_services, 1, now - timedelta(minutes=5))
    with any_services.sessions.begin() as session:
        session.execute(update(Event).values(attempts=MAX_EVENT_ATTEMPTS, error="boom"))
    assert Scheduler(any_services).sweep(now) == 0
    with any_services.sessions() as session:
        assert session.execute(select(Event.error)).scalar_one() == "boom"


def test_a_failing_event_records_its_error_and_does_not_block_others(any_services, monkeypatch):
    from engine import profiles
    from engine.workers import actors

    now = datetime.now(timezone.utc)
    store_without_enqueue(any_services, 2, now)
    real = profiles.apply_event

    def flaky(unit, event, at, **options):  # type: ignore[no-untyped-def]
        if event.message_id == "m0":
            raise ValueError("bad trait")
        return real(unit, event, at, **options)

    monkeypatch.setattr(profiles, "apply_event", flaky)
    with any_services.sessions() as session:
        ids = list(session.execute(select(Event.id).order_by(Event.id)).scalars())
    results = [actors.process_event(any_services, event_id) for event_id in ids]
    assert results == [False, True]
    with any_services.sessions() as session:
        first, second = session.execute(select(Event).order_by(Event.id)).scalars()
    assert first.processed_at is None and first.attempts == 1 and first.error == "ValueError: bad trait"
    assert second.processed_at is not None


def test_a_failing_event_in_a_batch_fails_alone(any_services, monkeypatch):
    # Given a message of three events, the middle one failing
    from engine import profiles
    from engine.workers import actors

    now = datetime.now(timezone.utc)
    store_without_enqueue(any_services, 3, now)
    real = profiles.apply_event

    def flaky(unit, event, at, **options):  # type: ignore[no-untyped-def]
        if event.message_id == "m1":
            raise ValueError("bad trait")
        return real(unit, event, at, **options)

    monkeypatch.setattr(profiles, "apply_event", flaky)
    with any_services.sessions() as session:
        ids = list(session.execute(select(Event.id).order_by(Event.id)).scalars())
    # When the batch is applied, it is rolled back and its events applied one by one
    assert actors.apply_events(any_services, ids) == [ids[1]]
    # Then only the bad one is left, with its error; the others are applied once
    with any_services.sessions() as session:
        events = list(session.execute(select(Event).order_by(Event.id)).scalars())
    assert [(e.processed_at is not None, e.attempts, e.error) for e in events] == [
        (True, 0, None), (False, 1, "ValueError: bad trait"), (True, 0, None)]


def test_a_paused_journeys_claimed_timer_is_not_swept_again_and_the_resume_releases_it(any_services):
    # Given Ada in cart_abandonment, her reminder's timer an hour away, and the journey paused
    now = datetime.now(timezone.utc)
    with any_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(Path(__file__).parents[2] / "journeys" / "cart_abandonment.yaml")], now)
    rows, _ = ingest.prepare({"type": "track", "event": "checkout_started", "userId": "ada", "messageId": "m-1",
                              "properties": {"cart_value": 80, "order_id": "o-1"}},
                             source="app", received_at=now, type_="track")
    with any_services.sessions.begin() as session:
        any_services.enqueue_events(ingest.store(session, rows))
    drain(any_services)
    with any_services.sessions.begin() as session:
        deploy.set_status(session, "cart_abandonment", "paused", now)
    any_services.deployed.invalidate()
    scheduler = Scheduler(any_services)
    # When its timer falls due, is claimed and left alone by the worker
    assert scheduler.fire_due(now + timedelta(hours=2)) == 1
    drain(any_services)
    # Then the sweeps leave it to the resume
    assert scheduler.sweep(now + timedelta(hours=3)) == 0
    # and once resumed, the scheduler's next tick fires it
    with any_services.sessions.begin() as session:
        deploy.set_status(session, "cart_abandonment", "active", now)
    any_services.deployed.invalidate()
    assert scheduler.fire_due(now + timedelta(hours=3)) == 1
    drain(any_services)
    with any_services.sessions() as session:
        assert session.execute(select(Delivery.step)).scalars().all() == ["reminder"]


def test_due_timers_are_claimed_no_faster_than_the_workers_fire_them(any_services, monkeypatch):
    # Given five customers in cart_abandonment, their reminders' timers an hour away,
    # and room for three timers claimed and not fired yet
    monkeypatch.setattr(scheduler_module, "TIMERS_IN_FLIGHT", 3)
    now = datetime.now(timezone.utc)
    with any_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(Path(__file__).parents[2] / "journeys" / "cart_abandonment.yaml")], now)
    for i in range(5):
        rows, _ = ingest.prepare({"type": "track", "event": "checkout_started", "userId": f"u{i}", "messageId": f"m-{i}",
                                  "properties": {"cart_value": 80, "order_id": f"o-{i}"}},
                                 source="app", received_at=now, type_="track")
        with any_services.sessions.begin() as session:
            any_services.enqueue_events(ingest.store(session, rows))
    drain(any_services)
    scheduler = Scheduler(any_services)
    # When they fall due, three are claimed, and no more while those wait on the queue
    # (the test's worker, which drain left running, is paused: they do wait there)
    worker = any_services._test_worker  # type: ignore[attr-defined]
    worker.pause()
    try:
        claimed = [scheduler.fire_due(now + timedelta(hours=2)), scheduler.fire_due(now + timedelta(hours=2))]
    finally:
        worker.resume()
    assert claimed == [3, 0]
    # Then once the workers fired them, the next tick claims the other two
    drain(any_services)
    assert scheduler.fire_due(now + timedelta(hours=2)) == 2
    drain(any_services)
    with any_services.sessions() as session:
        assert sorted(session.execute(select(Delivery.step)).scalars().all()) == ["reminder"] * 5
