from __future__ import annotations

import datetime as dt

import pytest

from engine.rules import (
    CelCompileError,
    ConditionResult,
    compile_condition,
    compile_expression,
    make_activation,
    mismatched_comparisons,
)
from engine.rules.references import field_references


def test_condition_reads_nested_event_properties() -> None:
    condition = compile_condition("event.properties.cart_value > 0 && customer.tier != 'gold'")

    assert condition.evaluate({"event": {"properties": {"cart_value": 5}}, "customer": {"tier": "silver"}}).value is True
    assert condition.evaluate({"event": {"properties": {"cart_value": 0}}, "customer": {"tier": "silver"}}).value is False


def test_missing_key_is_false_with_the_error_recorded() -> None:
    result = compile_condition("event.properties.cart_value > 0").evaluate({"event": {"properties": {}}})

    assert result.value is False
    assert result.error == 'no such key: "cart_value"'


def test_missing_variable_and_unconvertible_values_do_not_raise() -> None:
    condition = compile_condition("event.properties.n > 0")

    assert condition.evaluate({}).value is False
    assert condition.evaluate({"event": {"properties": {"n": 10**30}}}).error is not None


def test_non_boolean_result_counts_as_false() -> None:
    result = compile_condition("event.properties.name").evaluate({"event": {"properties": {"name": "x"}}})

    assert result.value is False and "not true or false" in (result.error or "")


def test_now_is_a_timestamp_and_nested_datetimes_become_text() -> None:
    now = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    condition = compile_condition("now > timestamp(customer.signed_up_at)")

    assert condition.evaluate({"now": now, "customer": {"signed_up_at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)}}).value


def test_prepared_activation_gives_the_same_answer() -> None:
    condition = compile_condition("trigger.properties.total >= 200")
    data = {"trigger": {"properties": {"total": 250}}}

    assert condition.evaluate(make_activation(data)).value is True


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("evnt.name == 'x'", "unknown variable 'evnt'", 1),
        ("event.name.startsWit('a')", "unknown name 'startsWit'", 12),
        ("1 + 'a' > 0", "type error: no operator or function '_+_' applied to '(int, string)'", 3),
        ("event.name ==", "syntax error: mismatched input '<EOF>'", 14),
        ("1 + 2", "a condition must be true or false, but this gives int", 1),
    ],
)
def test_compile_errors_are_located_and_explained(source: str, message: str, column: int) -> None:
    with pytest.raises(CelCompileError) as caught:
        compile_condition(source)

    issue = caught.value.issues[0]
    assert (issue.message, issue.column) == (message, column)


def test_unknown_variable_suggests_the_close_one() -> None:
    with pytest.raises(CelCompileError) as caught:
        compile_condition("custmer.points > 1")

    assert caught.value.issues[0].hint.startswith(". Did you mean 'customer'?")


def test_expression_gives_a_number() -> None:
    expression = compile_expression("int(trigger.properties.total)")

    assert expression.result_type == "int"
    assert expression.evaluate({"trigger": {"properties": {"total": 89.9}}}).value == 89


def test_field_references_skip_strings_methods_and_mark_has() -> None:
    refs = field_references('has(event.properties.x) && event.name.startsWith("customer.id") && trigger.a.b')

    assert [(r.variable, r.fields, r.tested) for r in refs] == [
        ("event", ("properties", "x"), True),
        ("event", ("name",), False),
        ("trigger", ("a", "b"), False),
    ]


def _mismatches(source: str, sample: dict[str, object]) -> list[tuple[str, str, str, str]]:
    """Type the source's field chains from ``sample`` (chain -> value) and list the mismatches."""
    typed = {(r.start, r.end): [sample[r.name]] for r in field_references(source) if r.name in sample}
    return [(source[m.offset :], m.operator, m.left, m.right) for m in mismatched_comparisons(source, typed)]


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ('trigger.properties.cart_value > "100"', [('> "100"', ">", "number", "string")]),
        ('"100" <= trigger.properties.cart_value', [("<= trigger.properties.cart_value", "<=", "string", "number")]),
        ('customer.vip == "true"', [('== "true"', "==", "bool", "string")]),
        ("customer.tier in [1, 2]", [("in [1, 2]", "in", "string", "number")]),
        ("trigger.properties.cart_value == customer.tier", [("== customer.tier", "==", "number", "string")]),
    ],
)
def test_comparisons_of_different_types_are_found(source: str, found: list[tuple[str, str, str, str]]) -> None:
    sample = {"trigger.properties.cart_value": 120, "customer.tier": "silver", "customer.vip": True}

    assert _mismatches(source, sample) == found


@pytest.mark.parametrize(
    "source",
    [
        "trigger.properties.cart_value == 120.0 && trigger.properties.cart_value < 130.5",  # int and double
        "trigger.properties.cart_value in [100, 120.5]",
        "customer.email == null || customer.email != null",  # email is null for a customer without one
        'customer.tier == "gold" && customer.tags.exists(t, t == "vip") && size(customer.tags) > 0',
        'customer.unknown == "x"',  # not in the sample: nothing to type it by
        'has(customer.tier) && customer.tier in ["gold", "silver"]',
    ],
)
def test_matching_types_and_unknowns_are_no_mismatch(source: str) -> None:
    sample = {"trigger.properties.cart_value": 120, "customer.tier": "silver", "customer.email": "a@example.com", "customer.tags": ["vip"]}

    assert _mismatches(source, sample) == []


def test_numbers_of_either_kind_compare_numerically_at_run_time() -> None:
    condition = compile_condition("event.properties.n == 120.0 && event.properties.n < 120.5 && event.properties.n in [120.0]")

    assert condition.evaluate({"event": {"properties": {"n": 120}}}) == ConditionResult(True)


def test_a_number_against_a_string_is_false_at_run_time() -> None:
    event = {"event": {"properties": {"n": 120}}}

    assert compile_condition('event.properties.n == "120"').evaluate(event) == ConditionResult(False)
    assert compile_condition('event.properties.n > "100"').evaluate(event).error == "No matching overloads found : _>_(int64, string)"
