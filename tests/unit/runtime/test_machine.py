"""The state machine, step by step: what each step emits, where it waits, how it ends."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from runtime_helpers import T0, checkout, customer, event, hours, journey

from engine.errors import TemplateError
from engine.runtime import (
    MAX_STEPS,
    AwardPoints,
    CancelTimer,
    Enrollment,
    EventArrived,
    Exit,
    IssueReferral,
    ScheduleTimer,
    Send,
    SetStage,
    TimerFired,
    UpdateProfile,
    advance,
    command_from_dict,
    command_to_dict,
    referral_code,
    render_send,
    start,
)


def of(kind, outcome):
    return [c for c in outcome.commands if isinstance(c, kind)]


def fire(j, outcome, cust, at):
    """Fire the timer the enrollment waits on, at ``at``."""
    return advance(j, outcome.state, TimerFired(outcome.state.wait.timer_key), cust, at)


# -- send ---------------------------------------------------------------------------------


def test_send_emits_an_unrendered_send_with_channel_template_and_policy():
    j = journey("policy: {kind: marketing, topic: carts}\nsteps:\n  - id: reminder\n    send: {channel: email, template: cart_reminder}\n")
    out = start(j, "e1", customer(), checkout(), T0)
    [send] = of(Send, out)
    assert (send.key, send.step, send.channel, send.template, send.topic, send.kind) == (
        "e1:reminder:1", "reminder", "email", "cart_reminder", "carts", "marketing"
    )
    assert send.content["parts"] == ["subject", "text"]
    assert send.variables["trigger"]["properties"]["order_id"] == "o-1"
    assert out.state.status == "completed" and out.state.step is None


def test_send_carries_the_steps_own_kind_else_the_journeys():
    j = journey(
        "policy: {kind: marketing, topic: orders}\nsteps:\n"
        "  - id: receipt\n    send: {channel: sms, text: Paid, kind: transactional}\n"
        "  - id: offer\n    send: {channel: sms, text: Come back}\n"
    )
    sends = of(Send, start(j, "e1", customer(), checkout(), T0))
    assert [(s.step, s.kind, s.topic) for s in sends] == [("receipt", "transactional", "orders"), ("offer", "marketing", "orders")]
    assert command_from_dict(json.loads(json.dumps(command_to_dict(sends[0])))) == sends[0]


def test_render_send_renders_with_the_customer_at_delivery_time():
    j = journey("steps:\n  - id: reminder\n    send: {channel: email, template: cart_reminder}\n")
    trigger = event("checkout_started", cart_value=99, order_id="o-1", currency="EUR", item_count=3)
    [send] = of(Send, start(j, "e1", customer(), trigger, T0))
    parts = render_send(j, send, customer(first_name="Grace"), T0)
    assert parts["subject"].startswith("Grace")
    assert "3 items worth 99 EUR" in parts["text"]


def test_render_send_raises_a_template_error_naming_the_missing_field():
    j = journey("steps:\n  - id: reminder\n    send: {channel: email, template: cart_reminder}\n")
    [send] = of(Send, start(j, "e1", customer(), checkout(), T0))  # no item_count
    with pytest.raises(TemplateError, match="item_count"):
        render_send(j, send, customer(), T0)


def test_retargeting_send_carries_audience_and_action():
    j = journey("steps:\n  - id: audience\n    send: {channel: retargeting, audience: carts, action: add}\n")
    [send] = of(Send, start(j, "e1", customer(), checkout(), T0))
    assert send.content == {"parts": [], "url": None, "audience": "carts", "action": "add"}


# -- wait ---------------------------------------------------------------------------------

WAIT = """steps:
  - id: pause
    wait: 3d
  - id: reminder
    send: {channel: log, text: hello}
"""


def test_wait_schedules_a_timer_and_the_timer_resumes_at_the_next_step():
    j = journey(WAIT)
    out = start(j, "e1", customer(), checkout(), T0)
    assert of(ScheduleTimer, out) == [ScheduleTimer(key="e1:pause:1", step="pause", at=T0 + dt.timedelta(days=3))]
    assert out.state.step == "pause" and out.state.wait.kind == "timer" and not of(Send, out)
    resumed = fire(j, out, customer(), T0 + dt.timedelta(days=3))
    assert [s.step for s in of(Send, resumed)] == ["reminder"]
    assert resumed.state.status == "completed"


def test_a_stale_timer_changes_nothing_and_emits_nothing():
    j = journey(WAIT)
    out = start(j, "e1", customer(), checkout(), T0)
    stale = advance(j, out.state, TimerFired("e1:pause:0"), customer(), T0 + dt.timedelta(days=3))
    assert stale.state == out.state and stale.commands == () and not stale.changed
    assert stale.trace[0].what == "ignore"


def test_an_ended_enrollment_ignores_every_input():
    j = journey(WAIT)
    done = fire(j, start(j, "e1", customer(), checkout(), T0), customer(), T0 + dt.timedelta(days=3))
    again = advance(j, done.state, TimerFired("e1:pause:1"), customer(), T0 + dt.timedelta(days=4))
    assert again.commands == () and again.state == done.state


@pytest.mark.parametrize(
    ("wait", "timezone", "due"),
    [
        # 12:00 UTC is 08:00 in New York: 09:00 there is 13:00 UTC the same day.
        ('{until: "09:00"}', "America/New_York", dt.datetime(2024, 5, 1, 13, 0, tzinfo=dt.timezone.utc)),
        # 12:00 UTC is 14:00 in Paris: 09:00 has passed, so tomorrow 09:00 = 07:00 UTC.
        ('{until: "09:00"}', "Europe/Paris", dt.datetime(2024, 5, 2, 7, 0, tzinfo=dt.timezone.utc)),
        # two days, then the next 10:00 in Tokyo (UTC+9): May 3 21:00 JST -> May 4 10:00 JST.
        ('{for: 2d, until: "10:00"}', "Asia/Tokyo", dt.datetime(2024, 5, 4, 1, 0, tzinfo=dt.timezone.utc)),
        # an unknown zone falls back to UTC.
        ('{until: "09:00"}', "Mars/Olympus", dt.datetime(2024, 5, 2, 9, 0, tzinfo=dt.timezone.utc)),
    ],
)
def test_wait_until_a_time_of_day_uses_the_customers_time_zone(wait, timezone, due):
    j = journey(f"steps:\n  - id: pause\n    wait: {wait}\n")
    out = start(j, "e1", customer(timezone=timezone), checkout(), T0)
    assert out.state.wait.until == due
    if timezone == "Mars/Olympus":
        assert any("unknown time zone" in t.detail for t in out.trace)


# -- wait_until ---------------------------------------------------------------------------

WAIT_UNTIL = """steps:
  - id: viewing
    wait_until: {event: product_viewed, when: event.properties.product_id != "p-0", timeout: 1d}
    on_event: tips
    on_timeout: nudge
  - id: tips
    send: {channel: log, text: "tips for {{ event.properties.product_id }}"}
    goto: end
  - id: nudge
    send: {channel: log, text: nudge}
"""


def test_wait_until_event_goes_to_on_event_and_cancels_the_timeout():
    j = journey(WAIT_UNTIL)
    out = start(j, "e1", customer(), checkout(), T0)
    assert out.state.wait.event == "product_viewed" and out.state.wait.until == T0 + hours(24)
    viewed = event("product_viewed", T0 + hours(2), product_id="p-7")
    resumed = advance(j, out.state, EventArrived(viewed), customer(), T0 + hours(2))
    assert of(CancelTimer, resumed) == [CancelTimer(key="e1:viewing:1", step="viewing")]
    [send] = of(Send, resumed)
    assert send.step == "tips"
    assert resumed.state.last_event == viewed
    assert render_send(j, send, customer(), T0)["text"] == "tips for p-7"


def test_wait_until_timeout_goes_to_on_timeout():
    j = journey(WAIT_UNTIL)
    timed_out = fire(j, start(j, "e1", customer(), checkout(), T0), customer(), T0 + hours(24))
    assert [s.step for s in of(Send, timed_out)] == ["nudge"]
    assert any(t.what == "timeout" for t in timed_out.trace)


def test_wait_until_ignores_an_event_whose_condition_is_false_and_keeps_waiting():
    j = journey(WAIT_UNTIL)
    out = start(j, "e1", customer(), checkout(), T0)
    miss = advance(j, out.state, EventArrived(event("product_viewed", T0 + hours(1), product_id="p-0")), customer(), T0 + hours(1))
    assert miss.commands == () and miss.state.step == "viewing" and miss.state.wait == out.state.wait
    assert [t.value for t in miss.trace if t.what == "condition"] == [False]


def test_wait_until_ignores_other_events():
    j = journey(WAIT_UNTIL)
    out = start(j, "e1", customer(), checkout(), T0)
    other = advance(j, out.state, EventArrived(event("page_viewed", T0 + hours(1))), customer(), T0 + hours(1))
    assert other.commands == () and other.state == out.state and not other.changed


def test_wait_until_without_a_timeout_schedules_no_timer_and_waits_forever():
    j = journey("steps:\n  - id: viewing\n    wait_until: {event: product_viewed}\n  - id: done\n    send: {channel: log, text: x}\n")
    out = start(j, "e1", customer(), checkout(), T0)
    assert not of(ScheduleTimer, out) and out.state.wait.until is None and out.state.wait.timer_key is None
    later = advance(j, out.state, EventArrived(event("product_viewed", T0 + dt.timedelta(days=400))), customer(), T0 + dt.timedelta(days=400))
    assert [s.step for s in of(Send, later)] == ["done"] and not of(CancelTimer, later)


def test_an_event_stamped_exactly_at_the_deadline_beats_the_timeout():
    j = journey(WAIT_UNTIL)
    out = start(j, "e1", customer(), checkout(), T0)
    deadline = out.state.wait.until
    # The worker sees the event first (both are due at the same instant): the event wins...
    won = advance(j, out.state, EventArrived(event("product_viewed", deadline, product_id="p-7")), customer(), deadline)
    assert [s.step for s in of(Send, won)] == ["tips"]
    # ...and the timer that fires next is stale.
    late_timer = advance(j, won.state, TimerFired("e1:viewing:1"), customer(), deadline)
    assert late_timer.commands == () and not late_timer.changed


def test_an_event_stamped_after_an_unfired_deadline_lets_the_timeout_happen_first():
    j = journey(WAIT_UNTIL)
    out = start(j, "e1", customer(), checkout(), T0)
    deadline = out.state.wait.until
    # The worker was behind: the timer has not fired, but the event happened a second too late.
    late = event("product_viewed", deadline + dt.timedelta(seconds=1), product_id="p-7")
    result = advance(j, out.state, EventArrived(late), customer(), deadline + hours(1))
    assert [s.step for s in of(Send, result)] == ["nudge"]
    assert [t.what for t in result.trace][0] == "catch_up"
    assert result.state.ended_at == deadline  # the timeout ran at its due time


# -- branch -------------------------------------------------------------------------------

BRANCH = """steps:
  - id: size
    branch:
      - when: trigger.properties.cart_value >= 200
        goto: big
      - when: trigger.properties.cart_value >= 100
        goto: medium
      - else: small
  - id: big
    send: {channel: log, text: big}
    goto: end
  - id: medium
    send: {channel: log, text: medium}
    goto: end
  - id: small
    send: {channel: log, text: small}
"""


@pytest.mark.parametrize(("value", "path"), [(500, "big"), (200, "big"), (150, "medium"), (10, "small")])
def test_branch_takes_the_first_case_that_holds_else_the_fallback(value, path):
    j = journey(BRANCH)
    out = start(j, "e1", customer(), event("checkout_started", cart_value=value, order_id="o-1"), T0)
    assert [s.step for s in of(Send, out)] == [path]
    conditions = [t for t in out.trace if t.what == "condition"]
    assert conditions[0].detail == "trigger.properties.cart_value >= 200"


def test_a_condition_that_fails_at_run_time_counts_as_false_and_is_traced():
    j = journey(BRANCH)
    out = start(j, "e1", customer(), event("checkout_started", order_id="o-1"), T0)  # no cart_value
    assert [s.step for s in of(Send, out)] == ["small"]
    errors = [t for t in out.trace if t.what == "condition"]
    assert [t.value for t in errors] == [False, False]
    assert all("cart_value" in (t.error or "") for t in errors)


def test_branch_without_else_continues_with_the_next_step():
    j = journey("steps:\n  - id: b\n    branch:\n      - when: customer.tier == 'gold'\n        goto: end\n"
                "  - id: after\n    send: {channel: log, text: x}\n")
    assert [s.step for s in of(Send, start(j, "e1", customer(tier="silver"), checkout(), T0))] == ["after"]
    assert of(Send, start(j, "e1", customer(tier="gold"), checkout(), T0)) == []


# -- split --------------------------------------------------------------------------------

SPLIT = """steps:
  - id: ab
    split:
      - {weight: 45, goto: a, name: variant_a}
      - {weight: 45, goto: b, name: variant_b}
      - {holdout: 10}
  - id: a
    send: {channel: log, text: a}
    goto: end
  - id: b
    send: {channel: log, text: b}
"""


def test_split_is_deterministic_per_customer_and_recorded_as_the_variant():
    j = journey(SPLIT)
    first = start(j, "e1", customer("c-42"), checkout(), T0)
    second = start(j, "e2", customer("c-42"), checkout(), T0 + dt.timedelta(days=30))
    assert first.state.variant == second.state.variant
    assert first.state.variant["ab"] in ("variant_a", "variant_b", "control")


def test_holdout_sends_nothing_and_ends_as_exited_holdout():
    j = journey(SPLIT)
    held = next(
        out for i in range(200) if (out := start(j, f"e{i}", customer(f"c-{i}"), checkout(), T0)).state.variant["ab"] == "control"
    )
    assert not of(Send, held)
    assert (held.state.status, held.state.reason, held.state.holdout) == ("exited", "holdout", True)
    assert of(Exit, held) == [Exit(key=held.state.id + ":exit", step="ab", status="exited", reason="holdout")]


def test_split_distribution_over_10000_customers_is_within_one_and_a_half_points():
    # Bucketing is a hash, not a random draw: these counts are the same on every run. The
    # tolerance (150 of 10,000) is about 5 standard deviations of a fair binomial.
    j = journey(SPLIT)
    counts = {"variant_a": 0, "variant_b": 0, "control": 0}
    for i in range(10_000):
        counts[start(j, f"e{i}", customer(f"customer-{i}"), checkout(), T0).state.variant["ab"]] += 1
    assert abs(counts["variant_a"] - 4500) <= 150
    assert abs(counts["variant_b"] - 4500) <= 150
    assert abs(counts["control"] - 1000) <= 150


# -- update, stage ------------------------------------------------------------------------


def test_update_sets_traits_and_stage_with_keys_from_step_and_visit():
    j = journey("steps:\n  - id: onboard\n    update: {traits: {onboarded: true}, stage: retention}\n")
    out = start(j, "e1", customer(stage="consideration"), checkout(), T0)
    assert of(UpdateProfile, out) == [UpdateProfile(key="e1:onboard:1", step="onboard", traits={"onboarded": True})]
    assert of(SetStage, out) == [SetStage(key="e1:onboard:1:stage", step="onboard", stage="retention", reason="step onboard of journey test_journey")]


def test_entering_a_journey_moves_the_stage_forward_only():
    j = journey("steps:\n  - id: s\n    send: {channel: log, text: x}\n")  # a consideration journey
    assert of(SetStage, start(j, "e1", customer(stage=None), checkout(), T0))[0].key == "e1:enter"
    assert of(SetStage, start(j, "e1", customer(stage="awareness"), checkout(), T0))[0].stage == "consideration"
    assert of(SetStage, start(j, "e1", customer(stage="consideration"), checkout(), T0)) == []
    assert of(SetStage, start(j, "e1", customer(stage="advocacy"), checkout(), T0)) == []


def test_a_step_stage_moves_the_customer_when_the_step_runs():
    j = journey("steps:\n  - id: pause\n    wait: 1d\n  - id: ask\n    send: {channel: log, text: x}\n    stage: advocacy\n")
    out = start(j, "e1", customer(stage="consideration"), checkout(), T0)
    assert of(SetStage, out) == []
    moved = fire(j, out, customer(stage="consideration"), T0 + hours(24))
    assert [(c.key, c.stage) for c in of(SetStage, moved)] == [("e1:ask:1:stage", "advocacy")]


# -- reward, referral ---------------------------------------------------------------------


def test_reward_with_an_expression_and_later_steps_see_the_new_balance():
    j = journey("""steps:
  - id: earn
    reward: {points: int(trigger.properties.cart_value), reason: order}
  - id: check
    branch:
      - when: customer.points >= 1000
        goto: gold
      - else: end
  - id: gold
    update: {traits: {tier: gold}}
""")
    out = start(j, "e1", customer(points=900), checkout(), T0)
    assert of(AwardPoints, out) == [AwardPoints(key="e1:earn:1", step="earn", amount=120, reason="order", to="customer")]
    assert of(UpdateProfile, out)[0].traits == {"tier": "gold"}
    assert of(UpdateProfile, start(j, "e1", customer(points=100), checkout(), T0)) == []


def test_reward_whose_amount_fails_awards_nothing_and_traces_why():
    j = journey("steps:\n  - id: earn\n    reward: {points: int(trigger.properties.cart_value)}\n")
    out = start(j, "e1", customer(), event("checkout_started", order_id="o-1"), T0)
    assert of(AwardPoints, out) == []
    assert any(t.step == "earn" and t.error for t in out.trace)
    assert out.state.status == "completed"


def test_reward_to_the_referrer_names_the_referral_code():
    j = journey("steps:\n  - id: thanks\n    reward: {points: 500, to: referrer, reason: referral}\n")
    [award] = of(AwardPoints, start(j, "e1", customer(), checkout(), T0))
    assert (award.to, award.amount, award.referral_code) == ("referrer", 500, "ADA-1")


def test_referral_issues_a_stable_code_stores_it_and_reuses_an_existing_one():
    j = journey("steps:\n  - id: code\n    referral: {program: friends, store_as: my_code}\n"
                "  - id: ask\n    send: {channel: log, text: \"{{ customer.my_code }}\"}\n")
    out = start(j, "e1", customer("c-9"), checkout(), T0)
    [issued] = of(IssueReferral, out)
    assert issued.code == referral_code(customer("c-9"), "friends") and issued.code.startswith("ADA-")
    assert (issued.program, issued.store_as, issued.key) == ("friends", "my_code", "e1:code:1")
    assert of(IssueReferral, start(j, "e2", customer("c-9"), checkout(), T0))[0].code == issued.code
    kept = start(j, "e3", customer("c-9", my_code="OLD-1"), checkout(), T0)
    assert of(IssueReferral, kept)[0].code == "OLD-1"
    assert render_send(j, of(Send, out)[0], {**customer("c-9"), "traits": {"first_name": "Ada", "my_code": issued.code}}, T0)["text"] == issued.code


# -- exit, goal, exit_on ------------------------------------------------------------------


@pytest.mark.parametrize(("conversion", "status"), [("true", "converted"), ("false", "exited")])
def test_exit_step_ends_the_enrollment(conversion, status):
    j = journey(f"steps:\n  - id: stop\n    exit: {{conversion: {conversion}, reason: enough}}\n  - id: never\n    send: {{channel: log, text: x}}\n")
    out = start(j, "e1", customer(), checkout(), T0)
    assert (out.state.status, out.state.reason, out.state.ended_at) == (status, "enough", T0)
    assert not of(Send, out)


GOAL = """goal:
  event: order_completed
  when: event.properties.order_id == trigger.properties.order_id
  goto: cleanup
exit_on:
  - event: account_deleted
steps:
  - id: pause
    wait: 1d
  - id: reminder
    send: {channel: log, text: reminder}
  - id: viewing
    wait_until: {event: product_viewed, timeout: 2d}
  - id: done
    goto: end
    send: {channel: log, text: done}
  - id: cleanup
    send: {channel: retargeting, audience: carts, action: remove}
  - id: after_cleanup
    wait: 1d
  - id: never
    send: {channel: log, text: never}
"""


@pytest.mark.parametrize("where", ["pause", "viewing"])
def test_goal_reached_while_waiting_converts_runs_the_cleanup_and_cancels_the_timer(where):
    j = journey(GOAL)
    out = start(j, "e1", customer(), checkout(), T0)
    if where == "viewing":
        out = fire(j, out, customer(), T0 + hours(24))
    assert out.state.step == where
    timer = out.state.wait.timer_key
    at = out.state.wait.until - hours(1)
    won = advance(j, out.state, EventArrived(event("order_completed", at, order_id="o-1")), customer(), at)
    assert won.commands[0] == CancelTimer(key=timer, step=where)
    assert [s.step for s in of(Send, won)] == ["cleanup"]  # the clean-up stops at its first wait
    assert (won.state.status, won.state.reason, won.state.ended_at) == ("converted", "goal:order_completed", at)
    assert of(Exit, won)[0].status == "converted" and won.state.wait is None and won.state.step is None


def test_goal_after_an_overdue_unfired_timer_converts_without_running_the_overdue_steps():
    j = journey(GOAL)
    out = start(j, "e1", customer(), checkout(), T0)  # the reminder is due after 24h
    at = T0 + hours(30)  # the worker is behind: the timer has not fired yet
    won = advance(j, out.state, EventArrived(event("order_completed", at, order_id="o-1")), customer(), at)
    assert [s.step for s in of(Send, won)] == ["cleanup"]  # no late reminder after the order
    assert won.state.status == "converted"


def test_goal_event_whose_condition_fails_is_ignored():
    j = journey(GOAL)
    out = start(j, "e1", customer(), checkout(), T0)
    other = advance(j, out.state, EventArrived(event("order_completed", T0 + hours(1), order_id="o-2")), customer(), T0 + hours(1))
    assert other.commands == () and other.state.status == "active"
    assert [t.value for t in other.trace if t.what == "condition"] == [False]


def test_exit_event_ends_the_enrollment_as_not_converted():
    j = journey(GOAL)
    out = start(j, "e1", customer(), checkout(), T0)
    gone = advance(j, out.state, EventArrived(event("account_deleted", T0 + hours(1))), customer(), T0 + hours(1))
    assert (gone.state.status, gone.state.reason) == ("exited", "exit_on:account_deleted")
    assert of(CancelTimer, gone) and not of(Send, gone)


# -- loops, idempotency, serialization -----------------------------------------------------

LOOP = """steps:
  - id: ping
    send: {channel: log, text: ping}
  - id: again
    branch:
      - when: "true"
        goto: ping
"""


def test_a_loop_with_no_wait_stops_with_an_exit_and_a_reason():
    j = journey(LOOP)
    out = start(j, "e1", customer(), checkout(), T0)
    assert out.state.status == "exited" and out.state.reason.startswith(f"loop: {MAX_STEPS} steps")
    sends = of(Send, out)
    assert len(sends) == MAX_STEPS // 2
    assert len({s.key for s in sends}) == len(sends)  # each visit its own key
    assert sends[-1].key == f"e1:ping:{MAX_STEPS // 2}"


def test_the_same_input_gives_the_same_commands_and_keys():
    j = journey(GOAL)
    one = start(j, "e1", customer(), checkout(), T0)
    two = start(j, "e1", customer(), checkout(), T0)
    assert one == two
    fired = [fire(j, one, customer(), T0 + hours(24)) for _ in range(2)]
    assert fired[0] == fired[1]


def test_state_and_commands_round_trip_through_json():
    j = journey(GOAL)
    out = start(j, "e1", customer(), checkout(), T0)
    steps = [out, fire(j, out, customer(), T0 + hours(24))]
    steps.append(advance(j, steps[-1].state, EventArrived(event("order_completed", T0 + hours(25), order_id="o-1")), customer(), T0 + hours(25)))
    for outcome in steps:
        text = json.dumps(outcome.state.to_dict())
        assert Enrollment.from_dict(json.loads(text)) == outcome.state
        for command in outcome.commands:
            assert command_from_dict(json.loads(json.dumps(command_to_dict(command)))) == command
        json.dumps([t.to_dict() for t in outcome.trace])


def test_naive_datetimes_are_refused():
    j = journey(WAIT)
    with pytest.raises(ValueError, match="time zone"):
        start(j, "e1", customer(), checkout(), dt.datetime(2024, 5, 1, 12))
