"""A profile merge hands the anonymous profile's journeys to the known customer (docs/runtime.md, "Merges").

On the twin, which runs the workers' code: a known customer checks out anonymously, an
identify links the anonymous id to them, and the journey goes on as theirs.
"""

from __future__ import annotations

import pytest

from engine.testing import JourneyTest
from engine.twin import trace

JOURNEY = "journeys/cart_abandonment.yaml"
CART = {"cart_value": 120.5, "currency": "EUR", "item_count": 2}


@pytest.fixture
def t() -> JourneyTest:
    """Margaret, known by user id and email, before she browses anonymously."""
    return JourneyTest(JOURNEY, customer_id="margaret", customer={"first_name": "Margaret", "email": "m@example.com"})


def anonymous_checkout(t: JourneyTest, order_id: str = "o-1") -> None:
    t.send({"anonymousId": "visitor-1", "event": "checkout_started", "properties": {**CART, "order_id": order_id}})


def identify_visitor(t: JourneyTest) -> None:
    t.twin.send({"type": "identify", "anonymousId": "visitor-1", "userId": "margaret", "traits": {}})


def test_the_known_customers_order_converts_the_enrollment_begun_anonymously(t):
    anonymous_checkout(t)
    t.advance("20m")
    identify_visitor(t)
    t.advance("10m").send("order_completed", order_id="o-1")
    t.advance("2d")
    assert t.twin.customers() == ["margaret"]
    assert [(e.status, e.reason) for e in t.enrollments] == [("converted", "goal:order_completed")]
    assert t.sent("email") == []


def test_an_enrollment_begun_anonymously_sends_to_the_known_customer(t):
    anonymous_checkout(t)
    identify_visitor(t)
    t.advance("1h")
    [reminder] = t.sent("email")
    assert reminder.customer == "margaret"
    assert [m.recipient.email for m in t.twin.channels["email"].sent] == ["m@example.com"]


def test_both_in_the_journey_the_older_enrollment_stays_and_the_other_exits_as_merged(t):
    t.send("checkout_started", order_id="o-1", **CART)  # margaret's own, the older
    t.advance("10m")
    anonymous_checkout(t, "o-2")
    t.advance("10m")
    identify_visitor(t)
    kept, merged = t.enrollments
    assert (kept.status, kept.trigger["properties"]["order_id"]) == ("active", "o-1")
    assert (merged.status, merged.reason, merged.trigger["properties"]["order_id"]) == ("exited", "merged", "o-2")
    assert any(entry.what == "merged" and kept.id in entry.detail for entry in t.twin.read(trace, merged.id))
    t.advance("2h")
    assert [s.step for s in t.sent("email")] == ["reminder"]  # one reminder: the kept enrollment's
    t.send("order_completed", order_id="o-1")
    assert [(e.status, e.reason) for e in t.enrollments] == [("converted", "goal:order_completed"), ("exited", "merged")]


def test_the_anonymous_enrollment_is_kept_when_it_is_the_older(t):
    anonymous_checkout(t, "o-2")
    t.advance("10m")
    t.send("checkout_started", order_id="o-1", **CART)  # margaret's, while the visitor's runs apart
    identify_visitor(t)
    older, younger = t.enrollments
    assert (older.status, older.trigger["properties"]["order_id"]) == ("active", "o-2")
    assert (younger.status, younger.reason) == ("exited", "merged")


def test_the_later_stage_of_the_two_profiles_is_the_customers():
    t = JourneyTest(JOURNEY, customer_id="margaret", stage="awareness")
    anonymous_checkout(t)  # the journey moves the visitor to consideration
    identify_visitor(t)
    assert t.stage == "consideration"
    assert [(c["from"], c["to"]) for c in t.profile.stage_history][-1] == ("awareness", "consideration")


def test_the_points_earned_anonymously_count_for_the_customer():
    t = JourneyTest("journeys/loyalty_points.yaml", customer_id="margaret", points=980,
                    customer={"first_name": "Margaret", "email": "m@example.com", "tier": "silver"})
    t.send({"anonymousId": "visitor-1", "event": "order_completed", "properties": {"order_id": "o-1", "total": 15}})
    identify_visitor(t)
    t.send("order_completed", order_id="o-2", total=5)  # 980 + 15 + 5: past 1,000
    assert t.points == 1000 and t.traits["tier"] == "gold"


def test_any_call_bringing_both_ids_merges_and_ends_the_extra_enrollment(t):
    t.send("checkout_started", order_id="o-1", **CART)
    anonymous_checkout(t, "o-2")
    t.send({"userId": "margaret", "anonymousId": "visitor-1", "event": "product_viewed", "properties": {"sku": "s-1"}})
    assert [(e.status, e.reason) for e in t.enrollments] == [("active", None), ("exited", "merged")]
