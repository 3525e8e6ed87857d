"""loyalty_points: a point per euro, gold tier and a notice at 1,000 points."""

from __future__ import annotations

from engine.testing import JourneyTest

JOURNEY = "journeys/loyalty_points.yaml"


def test_points_per_order_without_upgrade_below_a_thousand():
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "tier": "silver"})
    t.send("order_completed", order_id="o-1", total=89.9)
    assert t.points == 89 and t.sent() == [] and t.traits["tier"] == "silver"
    assert t.profile.ledger[0]["reason"] == "order"


def test_crossing_a_thousand_upgrades_to_gold_with_a_notice():
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "tier": "silver"}, points=950)
    t.send("order_completed", order_id="o-1", total=60)
    assert (t.points, t.traits["tier"]) == (1010, "gold")
    [notice] = t.sent("email")
    assert "1010 points" in notice.content["text"]
    t.send("order_completed", order_id="o-2", total=10)
    assert len(t.sent()) == 1  # gold already: no second notice


def test_every_order_enrolls_and_a_zero_total_does_not():
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "tier": "silver"})
    for i in range(3):
        t.send("order_completed", order_id=f"o-{i}", total=10)
    t.send("order_completed", order_id="free", total=0)
    assert len(t.enrollments) == 3 and t.points == 30


def test_a_new_customer_without_a_tier_is_upgraded_at_a_thousand():
    t = JourneyTest(JOURNEY, customer={"email": "new@example.com"}, points=1150)  # no tier, and no name either
    t.send("order_completed", order_id="o-1", total=50)
    assert (t.points, t.traits.get("tier")) == (1200, "gold")
    [notice] = t.sent("email")
    assert notice.content["text"].startswith("Hi there,") and "1200 points" in notice.content["text"]
