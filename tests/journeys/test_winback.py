"""winback: every order restarts a 60-day clock; then an offer and a last-chance SMS."""

from __future__ import annotations

from engine.testing import JourneyTest

JOURNEY = "journeys/winback.yaml"


def test_offer_after_sixty_quiet_days_then_an_sms_a_week_later_at_eleven():
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "phone": "+15550100", "timezone": "UTC"})
    t.send("order_completed", order_id="o-1", total=10)
    t.advance("59d")
    assert t.sent() == []
    t.advance("1d")
    assert [s.template for s in t.sent()] == ["winback_offer"]
    t.advance("7d").advance("2h")
    [sms] = t.sent("sms")
    assert sms.content["text"].startswith("Ada, your 15% code COMEBACK15")
    assert t.enrollment.status == "completed"


def test_a_new_order_restarts_the_clock():
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "phone": "+15550100"})
    t.send("order_completed", order_id="o-1", total=10)
    t.advance("50d").send("order_completed", order_id="o-2", total=10)
    assert [(e.status, e.reason) for e in t.enrollments] == [("exited", "exit_on:order_completed"), ("active", None)]
    t.advance("50d")
    assert t.sent() == []
    t.advance("10d")
    assert len(t.sent()) == 1


def test_redeeming_the_coupon_converts():
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "phone": "+15550100"})
    t.send("order_completed", order_id="o-1", total=10).advance("61d")
    t.send("coupon_redeemed", code="OTHER")
    assert t.enrollment.status == "active"
    t.send("coupon_redeemed", code="COMEBACK15")
    assert t.enrollment.status == "converted"
    t.advance("30d")
    assert t.sent("sms") == []
