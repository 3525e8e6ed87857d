from __future__ import annotations

import datetime as dt

import pytest

from engine.rules import CelCompileError, compile_condition, compile_expression, make_activation
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
