"""nps_survey: a survey a week after delivery; promoters get a referral ask, detractors support."""

from __future__ import annotations

import json

from engine.testing import JourneyTest

JOURNEY = "journeys/nps_survey.yaml"


def surveyed() -> JourneyTest:
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "timezone": "UTC"})
    t.send("order_delivered", order_id="o-1")
    t.advance("7d").advance("1h")  # Monday 09:00 + 7d, then the next 10:00
    assert [s.template for s in t.sent()] == ["nps_survey"]
    return t


def test_the_survey_waits_a_week_then_until_ten():
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "timezone": "UTC"})
    t.send("order_delivered", order_id="o-1").advance("7d")
    assert t.sent() == []


def test_a_promoter_gets_a_referral_code_and_the_ask():
    t = surveyed()
    t.send("nps_submitted", score=10, comment="Great")
    code = t.traits["referral_code"]
    assert code.startswith("ADA-") and t.profile.referral_codes == {"default": code}
    assert code in t.sent()[-1].content["text"]
    assert (t.stage, t.enrollment.status) == ("advocacy", "completed")


def test_a_detractor_opens_a_support_follow_up_by_webhook():
    t = surveyed()
    t.send("nps_submitted", score=3, comment="Late")
    [hook] = t.sent("webhook")
    body = json.loads(hook.content["body"])
    assert body == {
        "type": "nps_detractor", "customer_id": "test-customer", "email": "ada@example.com", "score": 3, "comment": "Late", "order_id": "o-1"
    }
    assert hook.detail["url"].endswith("/hooks/nps-detractor")


def test_passives_and_silence_end_quietly():
    t = surveyed()
    t.send("nps_submitted", score=7)
    assert len(t.sent()) == 1 and t.enrollment.status == "completed"
    quiet = surveyed()
    quiet.advance("7d")
    assert len(quiet.sent()) == 1 and quiet.enrollment.status == "completed"


def test_sharing_the_code_converts():
    t = surveyed()
    t.send("referral_shared")
    assert t.enrollment.status == "converted"
