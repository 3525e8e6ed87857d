"""The twin: the workers' own pipeline on an in-memory database, a stub broker and a virtual clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from engine.storage.models import Customer, Enrollment
from engine.twin import Twin, deliveries, next_due, trace

ROOT = Path(__file__).parents[2]
START = dt.datetime(2024, 5, 6, 10, tzinfo=dt.timezone.utc)
ORDER = {"type": "track", "event": "order_completed", "userId": "ada",
         "properties": {"order_id": "o-1", "total": 20.0, "currency": "EUR", "item_count": 1}}


def identified(twin: Twin) -> None:
    twin.send({"type": "identify", "userId": "ada", "traits": {"first_name": "Ada", "email": "ada@example.com"}})


def test_a_retryable_failure_is_retried_after_its_backoff_on_the_virtual_clock():
    with Twin([ROOT / "journeys" / "order_followup.yaml"], start=START) as twin:
        twin.channels["email"].fail("retryable", "smtp 451")
        identified(twin)
        twin.send(ORDER)
        [thanks] = twin.read(deliveries, "ada")
        assert (thanks.status, thanks.attempts, thanks.error) == ("pending", 1, "smtp 451")
        twin.advance(dt.timedelta(seconds=1))  # the first backoff: one second
        [thanks] = twin.read(deliveries, "ada")
        assert (thanks.status, thanks.attempts) == ("sent", 2)
        assert [m.recipient.email for m in twin.channels["email"].sent] == ["ada@example.com"]


def test_a_missing_address_fails_as_the_real_channel_would():
    with Twin([ROOT / "journeys" / "order_followup.yaml"], start=START) as twin:
        twin.send({"type": "identify", "userId": "ada", "traits": {"first_name": "Ada"}})  # and no email
        twin.send(ORDER)
        [thanks] = twin.read(deliveries, "ada")
        assert thanks.status == "failed" and "has no email" in (thanks.error or "")
        assert [t.what for t in twin.read(trace, thanks.enrollment_id)][-1] == "delivery failed"


def test_an_invalid_event_is_refused_with_what_is_wrong():
    with Twin([], start=START) as twin:
        try:
            twin.send({"type": "track", "userId": "ada"})
        except ValueError as exc:
            assert "event" in str(exc)
        else:
            raise AssertionError("a track without an event name was accepted")


def test_twins_share_nothing():
    with Twin([], start=START) as one, Twin([], start=START) as other:
        identified(one)
        assert one.customers() == ["ada"] and other.customers() == []


def test_an_anonymous_customer_is_named_by_their_anonymous_id_when_a_send_fails():
    with Twin([ROOT / "journeys" / "order_followup.yaml"], start=START) as twin:
        twin.send({**ORDER, "userId": None, "anonymousId": "anon-123"})
        [thanks] = twin.read(deliveries, "anon-123")
        assert thanks.error == "anonymous customer 'anon-123' has no email; a email message needs one"


def test_a_paused_journeys_due_timer_waits_for_the_resume_and_is_not_claimed_again_meanwhile():
    with Twin([ROOT / "journeys" / "cart_abandonment.yaml"], start=START) as twin:
        identified(twin)
        twin.send({"type": "track", "event": "checkout_started", "userId": "ada",
                   "properties": {"cart_value": 80, "order_id": "o-1", "currency": "EUR", "item_count": 1}})
        twin.set_status("cart_abandonment", "paused")
        twin.advance(dt.timedelta(hours=2))  # the reminder's timer falls due while paused
        assert next_due(twin.services) is None  # nothing for the scheduler until the resume
        assert twin.read(deliveries, "ada") == []
        twin.set_status("cart_abandonment", "active")
        twin.advance(dt.timedelta(seconds=1))
        assert [d.step for d in twin.read(deliveries, "ada")] == ["reminder"]


CART = ROOT / "journeys" / "cart_abandonment.yaml"


def cart_stream(at: dt.datetime) -> list[dict[str, object]]:
    """ada identifies, checks out 20 seconds later and orders 40 seconds after that; grace checks out between."""
    def track(user: str, name: str, seconds: int, **properties: object) -> dict[str, object]:
        return {"type": "track", "event": name, "userId": user, "properties": properties,
                "timestamp": (at + dt.timedelta(seconds=seconds)).isoformat()}
    return [
        {"type": "identify", "userId": "ada", "traits": {"first_name": "Ada", "email": "ada@example.com"},
         "timestamp": at.isoformat()},
        track("ada", "checkout_started", 20, cart_value=120.5, order_id="o-1", currency="EUR", item_count=1),
        track("grace", "checkout_started", 30, cart_value=89, order_id="o-2", currency="EUR", item_count=1),
        track("ada", "order_completed", 60, order_id="o-1", total=120.5),
    ]


def test_events_taken_in_batches_start_each_enrollment_at_its_own_event():
    with Twin([CART], start=START) as twin:
        refused = twin.send_many(cart_stream(START), span=dt.timedelta(minutes=5))
        twin.advance(dt.timedelta(days=2))
        started = twin.read(lambda s: dict(s.execute(select(Enrollment.customer_id, Enrollment.started_at)).all()))
        names = twin.read(lambda s: dict(s.execute(select(Customer.id, Customer.external_id)).all()))
    assert refused == []
    assert {names[c]: at for c, at in started.items()} == {
        "ada": START + dt.timedelta(seconds=20), "grace": START + dt.timedelta(seconds=30)}


def test_events_taken_in_batches_do_what_they_do_one_by_one():
    with Twin([CART], start=START) as one, Twin([CART], start=START) as batched:
        one.run(cart_stream(START), until=dt.timedelta(days=2))
        batched.send_many(cart_stream(START), span=dt.timedelta(minutes=5))
        batched.finish(dt.timedelta(days=2))
        assert batched.effects() == one.effects()


def test_batches_refuse_only_the_invalid_events():
    stream = cart_stream(START)
    stream.insert(2, {"type": "track", "userId": "ada", "timestamp": START.isoformat()})  # no event name
    with Twin([CART], start=START) as twin:
        refused = twin.send_many(stream)
        twin.advance(dt.timedelta(days=2))
        assert [event for event, _ in refused] == [stream[2]]
        assert "event" in refused[0][1]
        assert sorted(twin.customers()) == ["ada", "grace"]
