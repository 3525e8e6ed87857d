"""Explain a comparison of two different types in a condition, with the fix in the message."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.rules import CelCompileError, FieldReference, Mismatch, compile_expression

# A literal as CEL writes one: a string, a number, a boolean, null or a flat list of those.
_LITERAL = r"""("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?u?|true|false|null|\[[^\[\]]*\])"""
_AFTER = re.compile(r"\s*" + _LITERAL)
_BEFORE = re.compile(_LITERAL + r"\s*$")
_NAMES = {"number": "a number", "string": "a string", "bool": "a boolean", "list": "a list", "map": "a map"}


def explain(source: str, mismatch: Mismatch, refs: Sequence[FieldReference], values: Mapping[str, list[Any]]) -> tuple[str, int]:
    """The message for ``mismatch`` and the offset in ``source`` to point at (the literal to fix,
    else the operator); ``values`` holds the sample's values of each field chain, by name."""
    op_end = mismatch.offset + len(mismatch.operator)
    left = next((r for r in refs if r.end <= mismatch.offset and not source[r.end : mismatch.offset].strip()), None)
    right = next((r for r in refs if r.start >= op_end and not source[op_end : r.start].strip()), None)
    verdict = "true" if mismatch.operator == "!=" else "false"
    head = f'type mismatch in "{source}": compares'
    if left is not None and right is not None:
        sides = f"{_field(left, mismatch.left, values)} with {_field(right, mismatch.right, values)}"
        advice = "convert one side with int(), double() or string(), or correct the sample"
        return f"{head} {sides}, so it is always {verdict}; {advice}", mismatch.offset
    field, kind, other = (left, mismatch.left, mismatch.right) if left is not None else (right, mismatch.right, mismatch.left)
    literal = _AFTER.match(source, op_end) if left is not None else _BEFORE.search(source, 0, mismatch.offset)
    if field is None or literal is None:
        sides = f"{_NAMES.get(mismatch.left, mismatch.left)} with {_NAMES.get(mismatch.right, mismatch.right)}"
        return f"{head} {sides}, so it is always {verdict}; make both sides the same type", mismatch.offset
    text = literal.group(1)
    what = f"items of the list {text}" if mismatch.operator == "in" and text.startswith("[") else f"the {other} {text}"
    fix = _fix(text, kind)
    advice = fix or f"compare it with {_NAMES.get(kind, kind)}, or correct the sample if {field.name} holds {_NAMES.get(other, other)}"
    message = f"{head} {_field(field, kind, values)} with {what}, so it is always {verdict}; {advice}"
    return message, literal.start(1)


def _field(ref: FieldReference, kind: str, values: Mapping[str, list[Any]]) -> str:
    example = values.get(ref.name)
    shown = f" ({ref.name} is {_literal(example[0])} in the sample)" if example else ""
    return f"{_NAMES.get(kind, kind)}{shown}"


def _fix(text: str, kind: str) -> str:
    """``write 100 without quotes`` when the literal, converted to ``kind``, keeps its meaning."""
    try:
        value = compile_expression(text).evaluate({}).value
    except CelCompileError:
        return ""
    items = value if isinstance(value, list) else [value]
    converted = [_convert(item, kind) for item in items]
    if any(c is None for c in converted) or not items:
        return ""
    new = _literal(converted if isinstance(value, list) else converted[0])
    if kind == "string" and not isinstance(value, list):
        return f"write {new} in quotes"
    if isinstance(value, str):
        return f"write {new} without quotes"
    return f"write {new} instead"


def _convert(value: Any, kind: str) -> Any:
    if kind == "string" and isinstance(value, (bool, int, float)):
        return _literal(value)
    if kind == "number" and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() and "." not in value else number
    if kind == "bool" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _literal(value: Any) -> str:
    """``value`` as CEL (and JSON) write it: ``"gold"``, ``120``, ``true``, ``[1, 2]``."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return json.dumps(str(value))
