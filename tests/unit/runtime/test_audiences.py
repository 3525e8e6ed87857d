"""Audiences: a conversion or an exit takes the customer out of every audience the enrollment added them to."""

from __future__ import annotations

import json

import pytest
from runtime_helpers import T0, checkout, customer, event, hours, journey

from engine.runtime import CancelTimer, Enrollment, EventArrived, Exit, Send, TimerFired, advance, start, stop

JOURNEY = """goal:
  event: order_completed
exit_on:
  - event: account_deleted
steps:
  - id: join_carts
    send: {channel: retargeting, audience: carts, action: add}
  - id: join_browsers
    send: {channel: retargeting, audience: browsers, action: add}
  - id: pause
    wait: 1d
  - id: leave_browsers
    send: {channel: retargeting, audience: browsers, action: remove}
  - id: join_late
    send: {channel: retargeting, audience: late, action: add}
  - id: pause_again
    wait: 1d
  - id: too_late
    exit: {reason: too late}
"""


def sends(outcome):
    return [c for c in outcome.commands if isinstance(c, Send)]


def removals(outcome):
    return [(s.key, s.step, s.content["audience"]) for s in sends(outcome) if s.content["action"] == "remove"]


def at_pause():
    j = journey(JOURNEY)
    return j, start(j, "e1", customer(), checkout(), T0)


def on(j, state, name, at):
    return advance(j, state, EventArrived(event(name, at)), customer(), at)


def test_a_conversion_removes_once_from_each_audience_added_and_from_no_other():
    j, out = at_pause()
    assert out.state.audiences == {"carts": "join_carts", "browsers": "join_browsers"}

    won = on(j, out.state, "order_completed", T0 + hours(2))

    assert won.state.status == "converted"
    # ``late`` was never added: nothing to remove there
    assert removals(won) == [("e1:leave:carts", "join_carts", "carts"), ("e1:leave:browsers", "join_browsers", "browsers")]
    assert all(s.channel == "retargeting" and s.kind == "transactional" and s.content["parts"] == [] for s in sends(won))
    assert isinstance(won.commands[-1], Exit)  # removed, then ended
    assert won.state.audiences == {}
    assert [(t.step, t.what, t.value) for t in won.trace if t.what == "leave"] == [
        ("join_carts", "leave", "carts"), ("join_browsers", "leave", "browsers")]


def test_an_exit_event_removes_too():
    j, out = at_pause()
    gone = on(j, out.state, "account_deleted", T0 + hours(2))
    assert (gone.state.status, [a for *_, a in removals(gone)]) == ("exited", ["carts", "browsers"])


def test_an_exit_step_removes_only_what_a_remove_step_has_not():
    j, out = at_pause()
    out = advance(j, out.state, TimerFired(out.state.wait.timer_key), customer(), T0 + hours(24))
    assert [a for *_, a in removals(out)] == ["browsers"]  # the journey's own remove step
    assert out.state.audiences == {"carts": "join_carts", "late": "join_late"}

    out = advance(j, out.state, TimerFired(out.state.wait.timer_key), customer(), T0 + hours(48))

    assert (out.state.status, out.state.reason) == ("exited", "too late")
    assert [a for *_, a in removals(out)] == ["carts", "late"]


def test_a_journey_run_to_its_end_keeps_its_audiences():
    j = journey("steps:\n  - id: join\n    send: {channel: retargeting, audience: carts, action: add}\n")
    out = start(j, "e1", customer(), checkout(), T0)
    assert out.state.status == "completed"
    assert removals(out) == [] and out.state.audiences == {"carts": "join"}


def test_converting_again_or_replaying_the_input_removes_nothing_more():
    j, out = at_pause()
    won = on(j, out.state, "order_completed", T0 + hours(2))

    again = on(j, won.state, "order_completed", T0 + hours(3))
    replayed = on(j, out.state, "order_completed", T0 + hours(2))

    assert again.commands == ()  # the enrollment has ended
    assert removals(replayed) == removals(won)  # the same keys: the outbox keeps one of each


def test_an_audience_added_many_times_in_a_loop_is_left_once():
    j = journey("""goal:
  event: order_completed
steps:
  - id: join
    send: {channel: retargeting, audience: carts, action: add}
  - id: pause
    wait: 1d
  - id: again
    branch:
      - when: "true"
        goto: join
""")
    out = start(j, "e1", customer(), checkout(), T0)
    for day in (1, 2, 3):
        out = advance(j, out.state, TimerFired(out.state.wait.timer_key), customer(), T0 + hours(24 * day))
    assert len([s for s in sends(out) if s.content["action"] == "add"]) == 1

    won = on(j, out.state, "order_completed", T0 + hours(80))

    assert removals(won) == [("e1:leave:carts", "join", "carts")]


def test_an_add_on_the_goals_own_path_is_kept():
    j = journey("""goal:
  event: order_completed
  goto: join_buyers
steps:
  - id: join_carts
    send: {channel: retargeting, audience: carts, action: add}
  - id: pause
    wait: 1d
  - id: join_buyers
    send: {channel: retargeting, audience: buyers, action: add}
""")
    out = start(j, "e1", customer(), checkout(), T0)
    won = on(j, out.state, "order_completed", T0 + hours(2))
    assert [a for *_, a in removals(won)] == ["carts"]
    assert won.state.audiences == {"buyers": "join_buyers"}


@pytest.mark.parametrize(("ran", "left"), [(("join_carts", "join_browsers"), ["carts", "browsers"]),
                                           (("join_carts", "join_browsers", "leave_browsers"), ["carts"])])
def test_a_state_stored_before_audiences_were_tracked_reads_them_from_its_visits(ran, left):
    j, out = at_pause()
    old = out.state.to_dict()
    del old["audiences"]
    old["visits"] = {step: 1 for step in ("pause", *ran)}
    state = Enrollment.from_dict(json.loads(json.dumps(old)))
    assert state.audiences is None

    won = on(j, state, "order_completed", T0 + hours(2))

    assert [a for *_, a in removals(won)] == left


def test_the_audiences_round_trip_through_json():
    _, out = at_pause()
    assert Enrollment.from_dict(json.loads(json.dumps(out.state.to_dict()))) == out.state


def test_an_enrollment_stopped_by_a_merge_leaves_the_audiences_no_other_enrollment_holds():
    j, out = at_pause()
    stopped = stop(j, out.state, customer(), T0 + hours(2), "merged", keep_audiences={"carts"})
    assert (stopped.state.status, stopped.state.reason) == ("exited", "merged")
    assert removals(stopped) == [("e1:leave:browsers", "join_browsers", "browsers")]  # carts: the kept one's
    assert any(isinstance(c, CancelTimer) for c in stopped.commands) and isinstance(stopped.commands[-1], Exit)
    assert not stop(j, stopped.state, customer(), T0 + hours(3), "merged").changed
