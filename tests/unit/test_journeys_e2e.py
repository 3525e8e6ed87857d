"""The shipped journeys end to end on the twin: API -> events actor -> runtime -> timers
-> deliveries, with a recording channel in place of the real adapters."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from channels.base import Channel, Message, Result
from engine import deploy
from engine.api import create_app
from engine.scheduler import Scheduler
from engine.storage.models import Delivery, Enrollment, Event, PointsEntry, Timer, TraceEntry
from tests.conftest import create_key, drain

JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"


class Recorder(Channel):
    """Records what it is asked to send."""

    name = "recorder"

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def deliver(self, message: Message) -> Result:
        self.messages.append(message)
        return Result.sent(f"rec-{len(self.messages)}")


def policy_at_noon(services) -> None:  # type: ignore[no-untyped-def]
    """Given it is noon UTC for the delivery policy: the shipped journeys' quiet hours
    (21:00-08:00) would otherwise defer these tests' sends when the suite runs at night.
    Policy itself is tested in test_policy.py and test_quiet_hours.py."""
    real = services.deliverer.policy
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    services.deliverer.policy = lambda session, delivery, customer, _now: real(session, delivery, customer, noon)


@pytest.fixture
def engine(any_services):  # type: ignore[no-untyped-def]
    policy_at_noon(any_services)
    recorder = Recorder()
    for channel in ("email", "sms", "push", "webhook", "retargeting", "log"):
        any_services.adapters[channel] = recorder
    with any_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(p) for p in sorted(JOURNEYS.glob("*.yaml"))], datetime.now(timezone.utc))
    key = create_key(any_services)
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    with TestClient(create_app(any_services)) as client:

        def send(type_: str, **body: object) -> None:
            response = client.post(f"/v1/{type_}", json=body, headers=auth)
            assert response.status_code == 200, response.text
            drain(any_services)

        yield any_services, send, recorder


def time_passes(services, delta: timedelta) -> None:  # type: ignore[no-untyped-def]
    """Move every pending timer ``delta`` closer, then let the scheduler fire what is due."""
    with services.sessions.begin() as session:
        for timer in session.execute(select(Timer).where(Timer.fired_at.is_(None))).scalars():
            timer.due_at -= delta
    Scheduler(services).fire_due(datetime.now(timezone.utc))
    drain(services)


def sent(recorder: Recorder) -> list[tuple[str, str]]:
    return [(m.channel, m.metadata["step_id"]) for m in recorder.messages]


def test_order_gets_thanks_at_once_points_and_a_review_request_after_delivery(engine):
    services, send, recorder = engine
    send("identify", userId="ada", traits={"email": "ada@example.com", "first_name": "Ada", "timezone": "Europe/Paris"})
    send("track", userId="ada", event="order_completed",
         properties={"order_id": "o-1", "total": 120.0, "currency": "EUR", "item_count": 2})
    assert ("email", "thank_you") in sent(recorder)
    thanks = next(m for m in recorder.messages if m.metadata["step_id"] == "thank_you")
    assert "Ada" in thanks.content["subject"] + thanks.content["text"]
    assert thanks.recipient.email == "ada@example.com"
    with services.sessions() as session:
        points = session.execute(select(PointsEntry.amount)).scalars().all()
        running = dict(session.execute(select(Enrollment.journey_id, Enrollment.step).where(Enrollment.status == "active")).all())
    assert sum(points) > 0
    assert running["order_followup"] == "delivered"
    assert "winback" in running

    send("track", userId="ada", event="order_delivered", properties={"order_id": "o-1", "carrier": "DHL"})
    assert ("email", "review_request") not in sent(recorder)
    time_passes(services, timedelta(days=4))
    assert ("email", "review_request") in sent(recorder)
    with services.sessions() as session:
        followup = session.execute(select(Enrollment).where(Enrollment.journey_id == "order_followup")).scalar_one()
        statuses = set(session.execute(select(Delivery.status)).scalars())
    assert followup.status == "completed"
    assert statuses == {"sent"}


def test_cart_abandonment_converts_on_order_and_leaves_the_audience(engine):
    services, send, recorder = engine
    send("identify", userId="bob", traits={"email": "bob@example.com", "first_name": "Bob"})
    send("track", userId="bob", event="checkout_started",
         properties={"cart_value": 80.0, "order_id": "o-9", "currency": "EUR", "item_count": 1})
    time_passes(services, timedelta(hours=2))
    assert ("email", "reminder") in sent(recorder)
    time_passes(services, timedelta(days=1))
    assert ("retargeting", "retarget") in sent(recorder)
    send("track", userId="bob", event="order_completed", properties={"order_id": "o-9", "total": 80.0})
    with services.sessions() as session:
        cart = session.execute(select(Enrollment).where(Enrollment.journey_id == "cart_abandonment")).scalar_one()
        whats = set(session.execute(select(TraceEntry.what).where(TraceEntry.enrollment_id == cart.id)).scalars())
    assert cart.status == "converted"
    removal = [m for m in recorder.messages if m.channel == "retargeting" and m.content["action"] == "remove"]
    assert [m.idempotency_key for m in removal] == [f"{cart.id}:leave:cart_abandoners"]
    assert "goal" in whats


def test_same_event_processed_twice_sends_once(engine):
    services, send, recorder = engine
    send("identify", userId="cy", traits={"email": "cy@example.com", "first_name": "Cy"})
    send("track", userId="cy", event="order_completed", properties={"order_id": "o-2", "total": 10.0})
    before = len(recorder.messages)
    with services.sessions.begin() as session:
        event_id = session.execute(select(Event.id).where(Event.event == "order_completed")).scalar_one()
        session.execute(update(Event).where(Event.id == event_id).values(processed_at=None))
    services.actors.process_events.send([event_id])  # a redelivered message
    drain(services)
    with services.sessions() as session:
        deliveries = session.execute(select(Delivery.key)).scalars().all()
    assert len(deliveries) == len(set(deliveries))
    assert len(recorder.messages) == before


def test_same_timer_fired_twice_changes_nothing(engine):
    services, send, recorder = engine
    send("identify", userId="di", traits={"email": "di@example.com", "first_name": "Di"})
    send("track", userId="di", event="checkout_started",
         properties={"cart_value": 50.0, "order_id": "o-3", "currency": "EUR", "item_count": 1})
    with services.sessions() as session:
        key = session.execute(select(Timer.key)).scalar_one()
    services.actors.fire_timers.send([key])
    services.actors.fire_timers.send([key])
    drain(services)
    with services.sessions() as session:
        deliveries = session.execute(select(Delivery.step, Delivery.status, Delivery.error)).all()
    assert sent(recorder).count(("email", "reminder")) == 1, deliveries


def test_a_template_that_cannot_render_fails_its_delivery_with_the_reason(engine):
    services, send, recorder = engine
    send("identify", userId="ed", traits={"email": "ed@example.com", "first_name": "Ed"})
    # the cart reminder's template uses properties.item_count, which this app does not send
    send("track", userId="ed", event="checkout_started", properties={"cart_value": 50.0, "order_id": "o-4"})
    time_passes(services, timedelta(hours=2))
    with services.sessions() as session:
        delivery = session.execute(select(Delivery).where(Delivery.step == "reminder")).scalar_one()
    assert delivery.status == "failed"
    assert delivery.error == (
        "template: template cart_reminder.text (cart_abandonment v1 templates/cart_reminder.text.j2 line 3): "
        "no field 'item_count' (has: cart_value, order_id)"
    )
    assert ("email", "reminder") not in sent(recorder)  # never a half-blank message


def test_timers_fire_together_and_a_failing_one_fails_alone(engine, monkeypatch):
    # Given two customers waiting in the cart journey
    services, send, recorder = engine
    for who in ("fa", "fb"):
        send("identify", userId=who, traits={"email": f"{who}@example.com", "first_name": who})
        send("track", userId=who, event="checkout_started",
             properties={"cart_value": 50.0, "order_id": f"o-{who}", "currency": "EUR", "item_count": 1})
    with services.sessions() as session:
        keys = sorted(session.execute(select(Timer.key)).scalars())
    assert len(keys) == 2
    # When they fire in one message, and the first one's enrollment is broken
    real = services.orchestrator.on_timers

    def broken(session, batch, now):  # type: ignore[no-untyped-def]
        if keys[0] in batch:
            raise RuntimeError("broken enrollment")
        return real(session, batch, now)

    monkeypatch.setattr(services.orchestrator, "on_timers", broken)
    from engine.workers.actors import fire_timers_together

    with pytest.raises(RuntimeError, match="broken enrollment"):
        fire_timers_together(services, keys)  # raises for the culprit: the message is retried
    # Then the other timer fired anyway, and the broken one waits for the retry
    with services.sessions() as session:
        fired = dict(session.execute(select(Timer.key, Timer.fired_at)).all())
    assert fired[keys[0]] is None and fired[keys[1]] is not None
    monkeypatch.setattr(services.orchestrator, "on_timers", real)
    fire_timers_together(services, keys)
    with services.sessions() as session:
        assert session.execute(select(Timer.key).where(Timer.key.in_(keys), Timer.fired_at.is_(None))).all() == []
