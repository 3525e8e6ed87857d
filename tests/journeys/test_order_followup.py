"""order_followup: a thank-you at once, a review request three days after delivery.

The thank-you is transactional and the review request marketing. JourneyTest applies the
delivery policy as the workers do (quiet hours, caps, suppression); tests/unit/test_policy.py
covers the policy's rules one by one."""

from __future__ import annotations

from engine.testing import JourneyTest

JOURNEY = "journeys/order_followup.yaml"


def ordered(order_id: str = "o-1", t: JourneyTest | None = None) -> JourneyTest:
    t = t or JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "timezone": "UTC"})
    t.send("order_completed", order_id=order_id, total=89.9, currency="EUR", item_count=2)
    return t


def test_thank_you_then_review_request_three_days_after_delivery_at_ten():
    t = ordered()
    [thanks] = t.sent()
    assert thanks.content["text"].count("89.90 EUR") == 1
    assert t.stage == "purchase"
    t.advance("2d").send("order_delivered", order_id="o-1", carrier="DHL")  # Wednesday 09:00
    t.advance("3d")
    assert len(t.sent()) == 1  # Saturday 09:00: not yet 10:00
    t.advance("1h")
    assert t.sent()[-1].template == "review_request"
    assert (t.stage, t.enrollment.status) == ("retention", "completed")


def test_another_orders_delivery_does_not_count():
    t = ordered()
    t.send("order_delivered", order_id="o-2")
    t.advance("10d")
    assert len(t.sent()) == 1


def test_never_delivered_ends_after_thirty_days_without_a_request():
    t = ordered()
    t.advance("30d")
    assert t.enrollment.status == "completed" and len(t.sent()) == 1


def test_refund_exits_and_a_review_converts():
    t = ordered()
    t.send("order_refunded", order_id="o-1")
    assert t.enrollment.status == "exited"
    r = ordered()
    r.advance("1d").send("review_submitted", order_id="o-1", rating=5)
    assert r.enrollment.status == "converted"


def test_one_enrollment_per_order():
    t = ordered("o-1")
    ordered("o-2", t)
    assert [e.trigger["properties"]["order_id"] for e in t.enrollments] == ["o-1", "o-2"]
    t.send("order_refunded", order_id="o-1")
    assert [e.status for e in t.enrollments] == ["exited", "active"]


def test_the_thank_you_is_transactional_and_the_review_request_marketing():
    t = ordered()
    t.send("order_delivered", order_id="o-1").advance("4d")
    assert [(s.step, s.kind) for s in t.sent()] == [("thank_you", "transactional"), ("review_request", "marketing")]
    assert t.journeys["order_followup"].policy.kind == "marketing"  # the journey's kind, for every other send
