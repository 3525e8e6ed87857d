"""The CEL adapter: the one module that knows which CEL library the engine uses.

We use Google's ``cel-expr-python`` (the C++ runtime) because it type-checks an expression
against declared variables when it compiles it, so an unknown name (``evnt.name``), a
misspelt function (``startsWit``) or a type error (``1 + 'a'``) is found by
``journey validate`` rather than in a worker; and it evaluates a compiled expression in
about two microseconds. The Rust-backed ``common-expression-language`` package has no
declarations and no checker. See docs/journeys.md, "Conditions".
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel as _cel

from engine.errors import RuleError, did_you_mean

_T = _cel.Type
_ANY_MAP = _T.Map(_T.STRING, _T.DYN)

#: The variables a condition may read, with what they hold.
VARIABLES: dict[str, str] = {
    "event": "the event being handled (Segment track: event, properties, timestamp, ...)",
    "trigger": "the event that started the enrollment",
    "customer": "the customer's traits, plus id, stage, points and timezone",
    "context": "journey (id, name, stage), step and enrollment details",
    "now": "the current time, a CEL timestamp",
}
_DECLARATIONS = {name: _ANY_MAP for name in ("event", "trigger", "customer", "context")} | {
    "now": _T.TIMESTAMP
}
_ENV = _cel.NewEnv(variables=_DECLARATIONS)

# Functions and macros of CEL's standard library, for "did you mean" on unknown names.
_KNOWN_FUNCTIONS = (
    "size", "has", "all", "exists", "exists_one", "map", "filter", "int", "uint", "double",
    "string", "bool", "bytes", "timestamp", "duration", "type", "dyn", "matches",
    "contains", "startsWith", "endsWith", "getFullYear", "getMonth", "getDayOfMonth",
    "getDayOfWeek", "getDayOfYear", "getHours", "getMinutes", "getSeconds",
)  # fmt: skip

# The comparisons whose operands must have the same type, and how people write them.
_COMPARISONS = {"_==_": "==", "_!=_": "!=", "_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">=", "@in": "in"}
_OVERLOAD = re.compile(r"found no matching overload for '([^']+)' applied to '\((.*)\)'")
_NUMBERS = ("int", "uint", "double")

_ISSUE = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*?)(?:\n \||$)", re.S)
_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")


@dataclass(frozen=True)
class CelIssue:
    """One compile problem of an expression, located within the expression text."""

    line: int  # 1-based line within the expression
    column: int  # 1-based column within that line
    message: str
    hint: str = ""  # ". Did you mean 'event'? (variables: ...)", to follow the quoted source


@dataclass(frozen=True)
class ConditionResult:
    """The outcome of a condition: ``value`` is False whenever ``error`` is set."""

    value: bool
    error: str | None = None

    def __bool__(self) -> bool:
        return self.value


@dataclass(frozen=True)
class ExpressionResult:
    """The outcome of an expression: ``value`` is None whenever ``error`` is set."""

    value: Any
    error: str | None = None


def make_activation(data: Mapping[str, Any]) -> Any:
    """Prepare variables once for several evaluations (faster than passing a dict each time)."""
    return _ENV.Activation(_plain_variables(data))


class Expression:
    """A compiled CEL expression that yields a value (e.g. a ``reward`` amount)."""

    def __init__(self, source: str, compiled: Any) -> None:
        self.source = source
        self._compiled = compiled

    @property
    def result_type(self) -> str:
        """The type the checker inferred: ``bool``, ``int``, ``double``, ``string``, ``dyn``..."""
        return str(self._compiled.return_type().name()).lower()

    @property
    def references_variables(self) -> bool:
        """True when the expression reads at least one variable (so it is not a constant)."""
        try:
            result = self._compiled.eval(data={})
        except Exception:  # noqa: BLE001 - a missing variable may raise; that is the answer
            return True
        return bool(result.type() == _T.ERROR)

    def evaluate(self, activation: Mapping[str, Any] | Any) -> ExpressionResult:
        """Evaluate against the variables; never raises, a failure is returned as ``error``."""
        try:
            if isinstance(activation, Mapping):
                try:
                    result = self._compiled.eval(data=activation)
                except Exception:  # noqa: BLE001 - e.g. a value CEL has no type for: convert, retry
                    result = None
                if result is None or (result.type() == _T.ERROR and "Non-CEL value" in str(result.value())):
                    result = self._compiled.eval(data=_plain_variables(activation))
            else:
                result = self._compiled.eval(activation)
        except Exception as exc:  # noqa: BLE001 - a bad value must not crash a worker
            return ExpressionResult(None, _clean(str(exc)))
        if result.type() == _T.ERROR:
            return ExpressionResult(None, _clean(str(result.value())))
        return ExpressionResult(result.plain_value())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"


_TRUE = ConditionResult(True)
_FALSE = ConditionResult(False)


class Condition(Expression):
    """A compiled CEL condition; :meth:`evaluate` answers True or False and never raises."""

    def evaluate(self, activation: Mapping[str, Any] | Any) -> ConditionResult:  # type: ignore[override]
        """Evaluate the condition.

        A runtime failure (a missing key, a wrong type) counts as False and is returned in
        ``error`` so the runtime can record it; so does a result that is not a boolean.
        """
        if not isinstance(activation, Mapping):
            # Fast path: a boolean result is the common case, and an error's value is never a
            # bool, so the (slow) type check is only needed for anything else.
            try:
                value = self._compiled.eval(activation).value()
            except Exception:  # noqa: BLE001 - the general path below reports it
                value = None
            if type(value) is bool:
                return _TRUE if value else _FALSE
        result = super().evaluate(activation)
        if result.error is not None:
            return ConditionResult(False, result.error)
        if not isinstance(result.value, bool):
            return ConditionResult(False, f"condition gave {result.value!r}, not true or false")
        return ConditionResult(result.value)


def compile_expression(source: str) -> Expression:
    """Compile and type-check an expression.

    Raises:
        RuleError: it does not compile; ``issues`` lists each problem with its position.
    """
    return Expression(source, _compile(source))


def compile_condition(source: str) -> Condition:
    """Compile and type-check a condition, which must give a boolean (or ``dyn``).

    Raises:
        RuleError: it does not compile or gives another type; see ``issues``.
    """
    condition = Condition(source, _compile(source))
    if condition.result_type not in ("bool", "dyn"):
        issue = CelIssue(1, 1, f"a condition must be true or false, but this gives {condition.result_type}")
        raise CelCompileError(source, [issue])
    return condition


@dataclass(frozen=True)
class Mismatch:
    """A comparison of two values of different types, such as a number with a string."""

    offset: int  # 0-based offset of the operator in the expression's source
    operator: str  # as written: "==", ">", "in"...
    left: str  # the kind of each side: "number", "string", "bool", "list", "map", ...
    right: str  # for ``in``, the kind of the list's items


def mismatched_comparisons(source: str, typed: Mapping[tuple[int, int], list[Any]]) -> list[Mismatch]:
    """The comparisons in ``source`` whose two sides have different kinds.

    ``typed`` gives example values for spans of the source (field chains such as
    ``trigger.properties.cart_value``, from a journey's sample). Those spans are declared
    with the value's CEL type and CEL's own checker types the rest. The variables are maps of
    ``dyn`` at run time, so the checker alone cannot see that ``cart_value > "100"`` compares
    a number with a string (false at run time, for ever). Numbers of different kinds (``int``,
    ``uint``, ``double``) compare numerically at run time, so they match; so does ``null``.
    """
    text = list(source)
    declarations = dict(_DECLARATIONS)
    for n, ((start, end), values) in enumerate(sorted(typed.items())):
        kinds = {str(_cel_type(v)) for v in values}
        kind = _cel_type(values[0]) if len(kinds) == 1 else None
        name = f"_f{n}"
        if kind is None or "\n" in source[start:end] or end - start < len(name):
            continue
        text[start:end] = name.ljust(end - start, "_")
        declarations[name.ljust(end - start, "_")] = kind
    if len(declarations) == len(_DECLARATIONS):
        return []
    try:
        _cel.NewEnv(variables=declarations).compile("".join(text))
    except Exception as exc:  # noqa: BLE001 - the library raises RuntimeError with text
        return _mismatches(str(exc), source)
    return []


def _cel_type(value: Any) -> Any:
    """The CEL type a sample value has at run time, or None when it says nothing useful."""
    if isinstance(value, bool):
        return _T.BOOL
    if isinstance(value, (int, float)):
        return _T.DOUBLE  # int against double is no mistake: see mismatched_comparisons
    if isinstance(value, (str, _dt.date)):  # dates reach CEL as ISO text (see _plain)
        return _T.STRING
    if isinstance(value, (list, tuple)):
        return _T.List(_T.DYN)
    return None


def _mismatches(text: str, source: str) -> list[Mismatch]:
    starts = [0]
    for line in source.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    found = []
    for line, col, message in _ISSUE.findall(text):
        match = _OVERLOAD.search(message)
        if not match or match.group(1) not in _COMPARISONS:
            continue
        left, right = (_kind(t) for t in _split_types(match.group(2)))
        if match.group(1) == "@in" and right == "list":
            right = _kind(_split_types(match.group(2))[1][len("list(") : -1])
        if left == right or {left, right} & {"null", "dyn"}:
            continue
        found.append(Mismatch(starts[int(line) - 1] + int(col) - 1, _COMPARISONS[match.group(1)], left, right))
    return found


def _split_types(text: str) -> list[str]:
    """``"double, list(string)"`` -> ``["double", "list(string)"]`` (commas nest in types)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def _kind(cel_type: str) -> str:
    if cel_type in _NUMBERS:
        return "number"
    if cel_type == "null_type":
        return "null"
    return cel_type.split("(")[0]


class CelCompileError(RuleError):
    """An expression did not compile; ``issues`` holds every problem, located."""

    def __init__(self, source: str, issues: list[CelIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("; ".join(f'{i.message} in "{source}" at col {i.column}{i.hint}' for i in issues))


def _compile(source: str) -> Any:
    if not isinstance(source, str) or not source.strip():
        raise CelCompileError(str(source), [CelIssue(1, 1, "empty expression")])
    try:
        return _ENV.compile(source)
    except Exception as exc:  # noqa: BLE001 - the library raises RuntimeError with text
        raise CelCompileError(source, _issues(str(exc), source)) from None


def _issues(text: str, source: str) -> list[CelIssue]:
    found = []
    for line, col, msg in _ISSUE.findall(text):
        if "'*error*'" in msg:  # a follow-on of an error already reported
            continue
        column = int(col)
        match = _UNDECLARED.search(msg)
        if match and int(line) == 1:  # point at the name, not at the '.' after it
            start = source.rfind(match.group(1).split(".")[0], 0, column)
            column = start + 1 if start >= 0 else column
        found.append(CelIssue(int(line), column, *_explain(msg.strip())))
    return found or [CelIssue(1, 1, _clean(text))]


def _explain(message: str) -> tuple[str, str]:
    """Turn a checker message into ours and a hint, with "did you mean" for unknown names."""
    match = _UNDECLARED.search(message)
    if match:
        name = match.group(1)
        head = name.split(".")[0]
        if "." in name and head not in _DECLARATIONS:
            return f"unknown variable '{head}'", _did_you_mean(head, _DECLARATIONS)
        return f"unknown name '{name}'", _did_you_mean(name, [*_DECLARATIONS, *_KNOWN_FUNCTIONS])
    if message.startswith("Syntax error:"):
        message = "syntax error: " + message.removeprefix("Syntax error:").strip()
        message = re.sub(r" expecting \{.*\}$", "", message)
    if message.startswith("found no matching overload for"):
        message = "type error: " + message.replace("found no matching overload for", "no operator or function")
    return message, ""


def _did_you_mean(name: str, choices: Any) -> str:
    hint = did_you_mean(name, choices)
    listed = f" (variables: {', '.join(_DECLARATIONS)})"
    return f".{hint}{listed}" if hint else listed


def _clean(text: str) -> str:
    for prefix in ("INVALID_ARGUMENT: ", "NOT_FOUND: ", "UNKNOWN: "):
        text = text.removeprefix(prefix)
    return text.replace("Key not found in map : ", "no such key: ").split("\n")[0]


def _plain_variables(data: Mapping[str, Any]) -> dict[str, Any]:
    """Values CEL accepts: datetimes nested in maps become ISO strings, ``now`` stays a timestamp."""
    plain = {name: _plain(value) for name, value in data.items() if name != "now"}
    if "now" in data:
        plain["now"] = data["now"]
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return value
