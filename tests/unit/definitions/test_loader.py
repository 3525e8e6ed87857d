from __future__ import annotations

from pathlib import Path

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from engine.definitions import (
    BranchStep,
    SendStep,
    SplitStep,
    WaitStep,
    WaitUntilStep,
    load_journey,
    load_journeys,
)
from engine.errors import DefinitionError

ROOT = Path(__file__).parents[3]


def test_shipped_journeys_load_with_every_stage_covered() -> None:
    result = load_journeys([ROOT / "journeys"])

    assert result.errors == []
    assert {j.stage for j in result.journeys.values()} == {
        "awareness", "consideration", "purchase", "retention", "advocacy",
    }  # fmt: skip


def test_cart_abandonment_resolves_every_target() -> None:
    journey = load_journey(ROOT / "journeys" / "cart_abandonment.yaml")

    bought = journey.step("bought")
    assert isinstance(bought, WaitUntilStep)
    assert (bought.on_event, bought.on_timeout, bought.timeout) == (None, "big_cart", dt.timedelta(hours=24))
    branch = journey.step("big_cart")
    assert isinstance(branch, BranchStep)
    assert [c.goto for c in branch.cases] == ["discount"] and branch.next == "retarget"
    assert journey.step("leave_audience").next is None
    assert journey.goal is not None and journey.goal.goto is None
    assert journey.entry.reentry == "after" and journey.entry.reentry_after == dt.timedelta(days=7)


def test_compiled_conditions_evaluate_and_missing_keys_count_as_false() -> None:
    journey = load_journey(ROOT / "journeys" / "cart_abandonment.yaml")
    when = journey.trigger.when
    assert when is not None

    assert when.evaluate({"event": {"properties": {"cart_value": 10}}}).value is True
    missing = when.evaluate({"event": {"properties": {}}})
    assert missing.value is False and "cart_value" in (missing.error or "")


def test_send_step_renders_its_template_parts() -> None:
    journey = load_journey(ROOT / "journeys" / "cart_abandonment.yaml")
    reminder = journey.step("reminder")
    assert isinstance(reminder, SendStep)

    rendered = reminder.render(
        {"customer": {"first_name": "Bo"}, "trigger": {"properties": {"item_count": 2, "cart_value": 50, "currency": "EUR"}}}
    )

    assert rendered["subject"] == "Bo, your cart is waiting"
    assert "2 items worth 50 EUR" in rendered["text"]


def test_wait_until_a_time_of_day_is_in_the_customers_time_zone(load) -> None:
    journey = load("steps:\n  - id: morning\n    wait: {for: 1d, until: \"09:00\"}\n")
    step = journey.first
    assert isinstance(step, WaitStep)

    start = dt.datetime(2024, 3, 1, 20, 0, tzinfo=dt.timezone.utc)
    due = step.due(start, ZoneInfo("Europe/Berlin"))

    assert due == dt.datetime(2024, 3, 3, 8, 0, tzinfo=dt.timezone.utc)  # 09:00 in Berlin, after a day


def test_split_is_deterministic_per_customer_and_follows_the_weights(load) -> None:
    journey = load(
        "steps:\n  - id: test\n    split:\n      - {weight: 45, goto: a}\n      - {weight: 45, goto: b}\n"
        "      - {holdout: 10}\n  - id: a\n    wait: 1h\n    goto: end\n  - id: b\n    wait: 2h\n"
    )
    split = journey.first
    assert isinstance(split, SplitStep)

    first = [split.choose(f"c{i}", journey.id).name for i in range(3000)]
    again = [split.choose(f"c{i}", journey.id).name for i in range(3000)]
    counts = Counter(first)

    assert first == again
    assert set(counts) == {"a", "b", "holdout"}
    assert 200 < counts["holdout"] < 400
    assert [p.holdout for p in split.paths] == [False, False, True]


def test_segment_trigger_checks_its_condition_against_the_sample_customer(load) -> None:
    text = (
        "id: vip\nname: VIP\nstage: retention\ntrigger:\n  segment: vip\n  when: customer.lifetime_value >= 500\n"
        "sample:\n  customer: {lifetime_value: 900}\nsteps:\n  - id: a\n    update: {traits: {vip: true}}\n"
    )
    journey = load(text)

    assert journey.trigger.segment == "vip" and journey.trigger.event is None


def test_conditions_after_wait_until_see_the_awaited_event(load) -> None:
    text = (
        "steps:\n  - id: w\n    wait_until: {event: order_completed, timeout: 1d}\n    on_timeout: end\n"
        "  - id: b\n    branch:\n      - when: event.properties.order_id == trigger.properties.order_id\n"
        "        goto: end\n"
    )

    assert load(text).step("b").kind == "branch"


def test_problems_in_structure_and_meaning_are_reported_together(load) -> None:
    text = "steps:\n  - id: a\n    wait: soon\n  - id: b\n    send: {channel: email, template: nope}\n"

    with pytest.raises(DefinitionError) as caught:
        load(text)

    messages = [p.message for p in caught.value.problems]
    assert len(messages) == 2
    assert messages[0].startswith("'soon' is not a duration")
    assert messages[1].startswith("unknown template 'nope'")


def test_two_files_with_the_same_journey_id_are_an_error(tmp_path) -> None:
    source = (ROOT / "journeys" / "winback.yaml").read_text()
    (tmp_path / "templates").symlink_to(ROOT / "journeys" / "templates")
    (tmp_path / "a.yaml").write_text(source)
    (tmp_path / "b.yaml").write_text(source)

    result = load_journeys([tmp_path])

    assert list(result.journeys) == ["winback"]
    assert len(result.errors) == 1
    assert "journey id 'winback' is already used by" in str(result.errors[0])


def test_a_send_may_override_the_journeys_kind(load) -> None:
    text = (
        "policy: {kind: marketing}\nsteps:\n"
        "  - id: receipt\n    send: {channel: sms, text: Paid, kind: transactional}\n"
        "  - id: offer\n    send: {channel: sms, text: Come back}\n"
    )
    journey = load(text)

    receipt, offer = journey.step("receipt"), journey.step("offer")
    assert isinstance(receipt, SendStep) and isinstance(offer, SendStep)
    assert (receipt.message_kind, offer.message_kind) == ("transactional", None)
    assert (journey.send_kind(receipt), journey.send_kind(offer)) == ("transactional", "marketing")
    transactional = load(text.replace("kind: marketing", "kind: transactional"))
    assert transactional.send_kind(transactional.step("offer")) == "transactional"  # type: ignore[arg-type]


def test_a_wrong_send_kind_is_located_with_the_choices(load) -> None:
    text = ("steps:\n  - id: receipt\n    send: {channel: sms, text: Paid, kind: transactionl}\n"
            "  - id: b\n    send: {channel: sms, text: Hi, kind: 1}\n")

    with pytest.raises(DefinitionError) as caught:
        load(text)

    assert [str(p) for p in caught.value.problems] == [
        "line 15, col 44, steps[0].send.kind: unknown kind 'transactionl'. Did you mean 'transactional'? (allowed: marketing, transactional)",
        "line 17, col 42, steps[1].send.kind: unknown kind 1 (allowed: marketing, transactional)",
    ]
