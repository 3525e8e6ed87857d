"""Entry rules and routing: who enters, and which enrollments an event concerns."""

from __future__ import annotations

import datetime as dt

import pytest
from runtime_helpers import T0, checkout, customer, event, journey

from engine.runtime import EnrollmentState, EventArrived, TriggerIndex, advance, may_enter, route, start

STEPS = "steps:\n  - id: pause\n    wait: 30d\n"
DAY = dt.timedelta(days=1)


def entered(at: dt.datetime, status: str = "exited", eid: str = "e0") -> EnrollmentState:
    return EnrollmentState(id=eid, journey_id="test_journey", version=1, customer_id="c-1", started_at=at, status=status)


@pytest.mark.parametrize(
    ("entry", "previous", "now", "allowed"),
    [
        ("{reentry: never}", [], T0, True),
        ("{reentry: never}", [entered(T0 - 400 * DAY)], T0, False),
        ("{reentry: always}", [entered(T0 - DAY)], T0, True),
        ("{reentry: always}", [entered(T0 - DAY, "active")], T0, False),  # one active at a time
        ("{reentry: always, concurrent: 2}", [entered(T0 - DAY, "active")], T0, True),
        ("{reentry: always, concurrent: 2}", [entered(T0 - DAY, "active", "a"), entered(T0, "active", "b")], T0, False),
        ("{reentry: after 7d}", [entered(T0 - 6 * DAY)], T0, False),
        ("{reentry: after 7d}", [entered(T0 - 7 * DAY)], T0, True),  # the window opens at exactly 7 days
        ("{reentry: after 7d}", [entered(T0 - 30 * DAY), entered(T0 - 2 * DAY, eid="e1")], T0, False),  # from the latest
    ],
)
def test_may_enter_applies_reentry_and_concurrency(entry, previous, now, allowed):
    j = journey(f"entry: {entry}\n{STEPS}")
    ok, reason = may_enter(j, previous, now)
    assert ok is allowed
    assert (reason == "") is allowed


def test_may_enter_explains_when_the_window_opens():
    j = journey(f"entry: {{reentry: after 7d}}\n{STEPS}")
    ok, reason = may_enter(j, [entered(T0 - DAY)], T0)
    assert not ok and "re-entry opens at 2024-05-07T12:00:00+00:00" in reason


def test_route_indexes_by_trigger_and_checks_the_trigger_condition():
    big = journey("id: big_carts\nname: Big\nstage: consideration\ntrigger: {event: checkout_started, when: event.properties.cart_value > 100}\n"
                  "sample: {events: {checkout_started: {properties: {cart_value: 1}}}}\n" + STEPS)  # fmt: skip
    other = journey("id: signups\nname: S\nstage: awareness\ntrigger: {event: signed_up}\n" + STEPS)
    index = TriggerIndex.build([big, other])
    routes = route(index, event("checkout_started", cart_value=150), customer(), [], T0)
    assert [(r.action, r.journey.id, r.why) for r in routes] == [("enroll", "big_carts", "trigger")]
    assert routes[0].trace[0].value is True
    [away] = route(index, event("checkout_started", cart_value=50), customer(), [], T0)
    assert (away.action, away.why, away.detail, away.value) == (
        "turn_away", "condition_false", "event.properties.cart_value > 100 was false", {"event.properties.cart_value": 50})
    assert route(index, event("page_viewed"), customer(), [], T0) == []


def test_route_advances_enrollments_before_enrolling_so_an_exit_event_can_restart_a_journey():
    j = journey("entry: {reentry: always}\nexit_on:\n  - event: checkout_started\n" + STEPS)
    first = start(j, "e1", customer(), checkout(), T0)
    index = TriggerIndex.build([j])
    again = checkout()
    routes = route(index, again, customer(), [(first.state, j)], T0 + DAY)
    assert [(r.action, r.why) for r in routes] == [("advance", "exit_on"), ("enroll", "trigger")]
    ended = advance(j, first.state, EventArrived(again), customer(), T0 + DAY)
    assert ended.state.status == "exited"
    assert may_enter(j, [ended.state], T0 + DAY) == (True, "")


def test_route_finds_enrollments_waiting_for_the_event_or_having_it_as_goal():
    waiting = journey("steps:\n  - id: w\n    wait_until: {event: product_viewed, timeout: 1d}\n")
    goal = journey("id: goal_journey\nname: G\nstage: purchase\ntrigger: {event: signed_up}\ngoal: {event: product_viewed}\n" + STEPS)
    a = start(waiting, "a", customer(), checkout(), T0).state
    b = start(goal, "b", customer(), event("signed_up"), T0).state
    routes = route(TriggerIndex.build([waiting, goal]), event("product_viewed"), customer(), [(a, waiting), (b, goal)], T0)
    assert [(r.enrollment.id, r.why) for r in routes] == [("a", "wait_until"), ("b", "goal")]


def test_segment_trigger_enrolls_on_identify_when_the_condition_starts_to_hold():
    vip = journey("id: vip\nname: VIP\nstage: retention\ntrigger: {segment: gold_customers, when: customer.tier == 'gold'}\n"
                  "sample: {customer: {tier: gold}}\n" + STEPS)  # fmt: skip
    index = TriggerIndex.build([vip])
    identify = {"type": "identify", "userId": "c-1", "traits": {"tier": "gold"}, "timestamp": T0.isoformat()}
    routes = route(index, identify, customer(tier="gold"), [], T0, before=customer(tier="silver"))
    assert [(r.action, r.journey.id, r.why) for r in routes] == [("enroll", "vip", "segment")]
    assert route(index, identify, customer(tier="gold"), [], T0, before=customer(tier="gold")) == []
    assert route(index, identify, customer(tier="silver"), [], T0) == []
    started = start(vip, "s1", customer(tier="gold"), None, T0)
    assert started.state.trigger == {}
