"""cart_abandonment: a reminder after an hour, a discount for big carts, a retargeting audience."""

from __future__ import annotations

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
    assert len(t.enrollments) == 1
    refused = [e.detail["reason"] for e in t.effects if e.effect == "not_entered"]
    assert "at most 1 at once" in refused[0] and "re-entry opens" in refused[1]
    t.advance("4d")
    checkout(t)  # seven days after entering
    assert len(t.enrollments) == 2


def test_an_empty_cart_does_not_enter(t):
    checkout(t, value=0)
    assert t.enrollments == []
