"""welcome_series: welcome, then tips for explorers or a nudge (push or email), then onboarded."""

from __future__ import annotations

from engine.testing import JourneyTest

JOURNEY = "journeys/welcome_series.yaml"


def signed_up(**traits) -> JourneyTest:
    t = JourneyTest(JOURNEY, customer={"first_name": "Ada", "email": "ada@example.com", "push_token": "tok-ada",
                                       "timezone": "Europe/Paris", **traits})
    t.send("signed_up", plan="free", source="web")
    return t


def test_welcome_at_once_then_tips_for_a_customer_who_explores():
    t = signed_up()
    [welcome] = t.sent()
    assert welcome.template == "welcome" and "for the free plan" in welcome.content["text"]
    assert t.stage == "awareness"
    t.advance("3d")  # two days, then 09:00 in Paris (08:00 UTC) on Thursday: the wait is over
    t.send("product_viewed", product_id="p-1", category="shoes")
    assert t.sent()[-1].content["subject"] == "More shoes you might like"
    t.advance("5d")
    assert t.enrollment.status == "completed"
    assert (t.stage, t.traits["onboarded"]) == ("consideration", True)


def test_the_settle_in_wait_ends_at_nine_in_the_customers_time_zone():
    t = signed_up()  # signed up Monday 09:00 UTC (10:00 in Paris)
    wait = t.enrollment.wait
    assert wait is not None and wait.until.isoformat() == "2024-01-04T08:00:00+00:00"


def test_push_nudge_for_app_users_who_do_not_explore():
    t = signed_up(push_enabled=True)
    t.advance("6d")
    assert [(s.step, s.channel) for s in t.sent()] == [("welcome", "email"), ("push_nudge", "push")]
    assert t.sent("push")[0].content["title"] == "Hi Ada"


def test_email_nudge_otherwise():
    t = signed_up(push_enabled=False)
    t.advance("6d")
    assert [s.template for s in t.sent()] == ["welcome", "onboarding_nudge"]
    t_without_trait = signed_up()
    t_without_trait.advance("6d")
    assert t_without_trait.sent()[-1].step == "email_nudge"


def test_first_order_converts_and_account_deletion_exits():
    t = signed_up()
    t.advance("1d").send("order_completed", order_id="o-1")
    assert t.enrollment.status == "converted"
    gone = signed_up()
    gone.send("account_deleted")
    assert (gone.enrollment.status, gone.enrollment.reason) == ("exited", "exit_on:account_deleted")
    gone.advance("30d")
    assert len(gone.sent()) == 1


def test_signing_up_twice_enrolls_once():
    t = signed_up()
    t.advance("30d").send("signed_up", plan="pro", source="web")
    assert len(t.enrollments) == 1
