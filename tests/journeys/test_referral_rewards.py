"""referral_rewards: 500 points for the new customer and for whoever referred them."""

from __future__ import annotations

from engine.testing import JourneyTest
from engine.twin import referrals

JOURNEY = "journeys/referral_rewards.yaml"


def test_both_sides_get_500_points():
    t = JourneyTest(JOURNEY, customer={"first_name": "Grace", "email": "grace@example.com"})
    t.twin.send({"type": "identify", "userId": "ada", "traits": {"first_name": "Ada", "referral_code": "ADA-7F3K"}})
    t.send("referral_converted", referral_code="ADA-7F3K", order_id="o-1")
    assert t.points == 500
    assert t.twin.profile("ada").points == 500
    assert t.twin.read(referrals)[0]["referrer"] == "ada"
    assert t.sent()[0].content["subject"] == "500 points for you, Grace"


def test_an_unknown_code_rewards_only_the_friend():
    t = JourneyTest(JOURNEY, customer={"first_name": "Grace", "email": "grace@example.com"})
    t.send("referral_converted", referral_code="NOPE", order_id="o-1")
    assert t.points == 500
    [skipped] = [e for e in t.effects if e.effect == "no_referrer"]
    assert skipped.detail["referral_code"] == "NOPE"


def test_only_once_per_customer():
    t = JourneyTest(JOURNEY, customer={"first_name": "Grace", "email": "grace@example.com"})
    t.send("referral_converted", referral_code="X", order_id="o-1")
    t.send("referral_converted", referral_code="X", order_id="o-2")
    assert t.points == 500 and len(t.enrollments) == 1
