"""The twin: the workers' own pipeline on an in-memory database, a stub broker and a virtual clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

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
