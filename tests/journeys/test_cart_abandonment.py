"""cart_abandonment: a reminder after an hour, a discount for big carts, a retargeting audience."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.testing import JourneyTest

JOURNEY = "journeys/cart_abandonment.yaml"


def checkout(t: JourneyTest, value: float = 120.5) -> None:
    t.send("checkout_started", cart_value=value, order_id="o-1", currency="EUR", item_count=2)


@pytest.fixture
def t() -> JourneyTest:
    return JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com"})


def test_reminder_after_an_hour_then_the_retargeting_audience_then_out_of_it(t):
    checkout(t)
    assert t.stage == "consideration"
    t.advance("59m")
    assert t.sent() == []
    t.advance("1m")
    [reminder] = t.sent("email")
    assert reminder.template == "cart_reminder"
    assert reminder.content["subject"] == "Ada, your cart is waiting"
    t.advance("24h")
    assert [(s.step, s.detail["action"]) for s in t.sent("retargeting")] == [("retarget", "add")]
    t.advance("7d")
    assert [s.detail["action"] for s in t.sent("retargeting")] == ["add", "remove"]
    assert t.enrollment.status == "completed"


def test_a_big_cart_gets_the_discount(t):
    checkout(t, value=250)
    t.advance("25h")
    assert [s.template for s in t.sent("email")] == ["cart_reminder", "cart_discount"]
    assert "CART10" in t.sent("email")[1].content["text"]


def test_the_order_converts_at_once_and_leaves_the_audience(t):
    checkout(t)
    t.advance("2d")
    t.send("order_completed", order_id="o-1", total=120.5)
    assert (t.enrollment.status, t.enrollment.reason) == ("converted", "goal:order_completed")
    assert [s.detail["action"] for s in t.sent("retargeting")] == ["add", "remove"]
    t.advance("30d")
    assert len(t.sent()) == 3  # nothing more


def test_an_order_before_the_reminder_means_no_reminder(t):
    checkout(t)
    t.advance("30m")
    t.send("order_completed", order_id="o-1")
    t.advance("2d")
    assert t.sent("email") == [] and t.enrollment.status == "converted"


def test_an_order_for_another_cart_does_not_convert(t):
    checkout(t)
    t.send("order_completed", order_id="o-other")
    assert t.enrollment.status == "active"


def test_reentry_only_after_seven_days(t):
    checkout(t)
    checkout(t)  # still inside: one enrollment at a time
    t.advance("2d").send("order_completed", order_id="o-1")
    t.advance("1d")
    checkout(t)  # three days after entering: not yet
    assert len(t.enrollments) == 1  # the workers turn both away without a trace row
    t.advance("4d")
    checkout(t)  # seven days after entering
    assert len(t.enrollments) == 2


def test_an_empty_cart_does_not_enter(t):
    checkout(t, value=0)
    assert t.enrollments == []


def test_an_order_before_the_audience_sends_no_removal_to_a_customer_never_added(t):
    checkout(t)
    t.advance("2h")  # the reminder went; the audience comes after a day
    t.send("order_completed", order_id="o-1")
    t.advance("30d")
    assert t.enrollment.status == "converted"
    assert t.deliveries("retargeting") == []


def test_an_order_after_the_audience_takes_the_customer_out_of_it_once(t):
    # The runtime's removal for every audience the enrollment added the customer to.
    checkout(t)
    t.advance("2d")
    t.send("order_completed", order_id="o-1", total=120.5)
    t.send("order_completed", order_id="o-1", total=120.5)  # a second order: nothing more
    assert t.enrollment.status == "converted"
    assert [(s.step, s.detail["action"], s.kind) for s in t.sent("retargeting")] == [
        ("retarget", "add", "marketing"), ("retarget", "remove", "transactional")]
    assert t.sent("retargeting")[1].detail["key"] == f"{t.enrollment.id}:leave:cart_abandoners"


def test_run_to_its_end_it_leaves_the_audience_by_its_own_step_once(t):
    # The remove step runs after the 7 days: the enrollment has no audience left to leave.
    checkout(t)
    t.advance("9d")
    assert t.enrollment.status == "completed" and t.enrollment.audiences == {}
    assert [s.detail["action"] for s in t.sent("retargeting")] == ["add", "remove"]


def test_a_reminder_due_in_quiet_hours_waits_for_eight_and_is_held_if_she_ordered_by_then():
    # Monday 10:30 UTC is 06:30 in New York: the reminder falls due at 07:30, in the quiet hours.
    t = JourneyTest(JOURNEY, customer={"first_name": "Grace", "email": "grace@example.com", "timezone": "America/New_York"},
                    start=dt.datetime(2024, 5, 6, 10, 30, tzinfo=dt.timezone.utc))
    checkout(t, value=89)
    t.advance("1h")
    [waiting] = t.deliveries("email")
    assert waiting.detail["status"] == "pending" and "deferred to 2024-05-06T12:00:00+00:00" in waiting.detail["reason"]
    # She orders at 08:00 in New York, the instant the send is released: the event goes first.
    t.send({"event": "order_completed", "properties": {"order_id": "o-1"}, "timestamp": "2024-05-06T12:00:00Z"})
    t.advance("1h")
    assert t.sent("email") == []
    [held] = t.held("email")
    assert "the enrollment converted" in held.detail["reason"]


def test_an_anonymous_checkout_then_identify_then_order_is_one_customer_converted_without_a_reminder():
    t = JourneyTest(JOURNEY, customer_id="margaret")
    t.send({"anonymousId": "visitor-1", "event": "checkout_started",
            "properties": {"cart_value": 50, "order_id": "o-1", "currency": "EUR", "item_count": 1}})
    t.advance("20m")
    t.twin.send({"type": "identify", "anonymousId": "visitor-1", "userId": "margaret",
                 "traits": {"first_name": "Margaret", "email": "margaret@example.com"}})
    t.advance("20m").send("order_completed", order_id="o-1")
    t.advance("2d")
    assert t.twin.customers() == ["margaret"]
    assert [(e.status, e.reason) for e in t.enrollments] == [("converted", "goal:order_completed")]
    assert t.sent("email") == []
