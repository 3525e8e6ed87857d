from __future__ import annotations

from engine.definitions.lint import lint


def messages(journey) -> list[str]:
    return [str(p) for p in lint(journey)]


GOAL = "goal: {event: order_completed}\n"


def test_a_clean_journey_has_no_warnings(load) -> None:
    assert messages(load(GOAL + "steps:\n  - id: a\n    wait: 1h\n")) == []


def test_unreachable_step(load) -> None:
    found = messages(load(GOAL + "steps:\n  - id: a\n    wait: 1h\n    goto: end\n  - id: orphan\n    wait: 2h\n"))

    assert found == ["line 18, col 5, steps[1]: step 'orphan' is unreachable: no step leads to it; remove it or add a goto"]


def test_loop_with_no_wait(load) -> None:
    text = GOAL + (
        "steps:\n  - id: a\n    update: {traits: {x: 1}}\n  - id: b\n    branch:\n"
        "      - when: customer.x == 1\n        goto: a\n      - else: end\n"
    )

    assert messages(load(text)) == [
        "line 15, col 5, steps[0]: loop with no wait in it (a -> b -> a) would run without pause; add a wait step to it"
    ]


def test_a_loop_through_a_wait_is_fine(load) -> None:
    text = GOAL + "steps:\n  - id: a\n    wait: 1d\n  - id: b\n    update: {traits: {x: 1}}\n    goto: a\n"

    assert messages(load(text)) == []


def test_wait_until_without_timeout(load) -> None:
    found = messages(load(GOAL + "steps:\n  - id: a\n    wait_until: {event: order_completed}\n"))

    assert found == [
        "line 16, col 17, steps[0].wait_until: wait_until 'order_completed' has no timeout; customers who never send it wait forever"
    ]


def test_marketing_send_without_goal(load) -> None:
    found = messages(load("steps:\n  - id: a\n    send: {channel: sms, text: Hi}\n"))

    assert found == [
        "line 14, col 5, steps[0]: marketing sends in a journey with no goal: add a goal event to measure conversions"
    ]


def test_transactional_send_without_goal_is_fine(load) -> None:
    text = "policy: {kind: transactional}\nsteps:\n  - id: a\n    send: {channel: sms, text: Hi}\n"

    assert messages(load(text)) == []


def test_the_goal_warning_follows_each_sends_own_kind(load) -> None:
    receipts = "steps:\n  - id: a\n    send: {channel: sms, text: Paid, kind: transactional}\n"
    mixed = ("policy: {kind: transactional}\nsteps:\n  - id: a\n    send: {channel: sms, text: Paid}\n"
             "  - id: b\n    send: {channel: sms, text: Offer, kind: marketing}\n")

    assert messages(load(receipts)) == []  # a marketing journey whose only send is transactional
    assert messages(load(mixed)) == [
        "line 17, col 5, steps[1]: marketing sends in a journey with no goal: add a goal event to measure conversions"
    ]


def test_trigger_event_doubling_as_goal(load) -> None:
    found = messages(load("goal: {event: checkout_started}\nsteps:\n  - id: a\n    wait: 1h\n"))

    assert found == [
        "line 13, col 15, goal.event: the goal event 'checkout_started' is also the trigger event, so every enrollment converts at once"
    ]


def test_conditions_that_can_never_hold(load) -> None:
    text = GOAL + (
        "steps:\n  - id: a\n    branch:\n      - when: 1 > 2\n        goto: end\n"
        "      - when: trigger.properties.cart_value > 10\n        goto: end\n"
        "      - when: trigger.properties.cart_value > 10\n        goto: end\n"
    )

    assert messages(load(text)) == [
        'line 17, col 15, steps[0].branch[0].when: "1 > 2" is always false, so it can never hold',
        'line 21, col 15, steps[0].branch[2].when: "trigger.properties.cart_value > 10" repeats an earlier case of this branch, '
        'so it never picks this path',
    ]


def test_a_trait_read_without_has_may_be_missing(load) -> None:
    text = GOAL + 'steps:\n  - id: a\n    branch:\n      - when: customer.first_name != "Bob"\n        goto: end\n'

    assert messages(load(text)) == [
        'line 17, col 15, steps[0].branch[0].when: "customer.first_name != "Bob"" reads customer.first_name, which a customer'
        " may not have (a new one has only the traits the app sent); then the condition fails and counts as false."
        ' Write (!has(customer.first_name) || customer.first_name != "Bob") to let those without it through'
    ]


def test_has_the_fields_every_customer_has_and_traits_set_on_every_path_need_no_guard(load) -> None:
    text = GOAL + (
        "steps:\n  - id: a\n    branch:\n      - when: has(customer.first_name) && customer.first_name == 'Ada'\n        goto: b\n"
        "      - when: customer.points > 10 && customer.stage == 'retention' && customer.timezone != 'UTC'\n        goto: b\n"
        "  - id: b\n    update: {traits: {tier: gold}}\n"
        "  - id: c\n    branch:\n      - when: customer.tier == 'gold'\n        goto: end\n"
    )

    assert messages(load(text)) == []


def test_a_trait_set_on_only_one_path_is_not_guaranteed(load) -> None:
    text = GOAL + (
        "steps:\n  - id: a\n    branch:\n      - when: customer.points > 10\n        goto: c\n"
        "  - id: b\n    update: {traits: {tier: gold}}\n"
        "  - id: c\n    branch:\n      - when: customer.tier == 'gold'\n        goto: end\n"
    )

    [warning] = messages(load(text))
    assert warning.startswith("line 23, col 15, steps[2].branch[0].when: \"customer.tier == 'gold'\" reads customer.tier,")


def test_a_property_the_sample_gives_as_null_may_be_missing(load) -> None:
    text = (
        "id: coupons\nname: Coupons\nstage: purchase\ntrigger:\n  event: order_completed\n  when: trigger.properties.coupon == 'X'\n"
        "goal: {event: review_left}\n"
        "sample:\n  events:\n    order_completed: {properties: {order_id: o-1, coupon: null}}\n"
        "steps:\n  - id: a\n    wait: 1h\n"
    )

    [warning] = messages(load(text))
    assert "reads trigger.properties.coupon, which the sample gives as null (the event may come without it)" in warning


def test_a_template_that_needs_a_trait_a_customer_may_lack(load) -> None:
    needs = "steps:\n  - id: a\n    send: {channel: sms, text: 'Hi {{ customer.first_name }}'}\n"
    copes = "steps:\n  - id: a\n    send: {channel: sms, text: \"Hi {{ customer.first_name | default('there') }}\"}\n"

    assert messages(load(GOAL + needs)) == [
        "line 16, col 11, steps[0].send: the message fails to render for a customer without first_name (a new one has only"
        " the traits the app sent), so they get no message; write {{ customer.first_name | default(\"...\") }} or"
        " {% if customer.first_name is defined %}...{% endif %}"
    ]
    assert messages(load(GOAL + copes)) == []
