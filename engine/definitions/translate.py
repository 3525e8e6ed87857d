"""Turn Pydantic validation errors into our own located, actionable problems."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, Discriminator, Tag
from pydantic_core import ErrorDetails

from engine.definitions.document import STEP_KINDS, JourneyDocument
from engine.definitions.source import Path, Source
from engine.errors import Problem, did_you_mean

# The keys each discriminated union chooses by, for messages about a missing or extra one.
_KIND_KEYS = {
    "step_kind": tuple(STEP_KINDS),
    "trigger_kind": ("event", "segment"),
    "branch_kind": ("when", "else"),
    "split_kind": ("weight", "holdout"),
}
_TYPE_NAMES = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list (lines starting with '- ')",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
}


def translate(errors: list[ErrorDetails], source: Source) -> list[Problem]:
    """One problem per Pydantic error, located in the file, worded for the person editing it."""
    return [_problem(error, source) for error in errors]


def _problem(error: ErrorDetails, source: Source) -> Problem:
    path, annotation, parent, levels = _resolve(error["loc"])
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return source.problem(path[:-1], f"missing key '{path[-1]}'")
    if kind == "extra_forbidden":
        moved = _misplaced(path, levels, source)
        if moved:
            return source.problem(path, moved, key=True)
        allowed = _keys(parent)
        hint = did_you_mean(str(path[-1]), allowed)
        return source.problem(path, f"unknown key '{path[-1]}'.{hint} (allowed: {', '.join(allowed)})".replace(". (", " ("), key=True)
    if kind in _KIND_KEYS:
        return source.problem(path, _kind_message(kind, value, error["msg"]))
    if kind == "literal_error":
        allowed = [str(a) for a in typing.get_args(_unwrap(annotation))] or [error.get("ctx", {}).get("expected", "")]
        name = str(path[-1]) if path and isinstance(path[-1], str) else "value"
        hint = did_you_mean(value, allowed)
        return source.problem(path, f"unknown {name} {_show(value)}.{hint} (allowed: {', '.join(allowed)})".replace(". (", " ("))
    if kind == "value_error":
        return source.problem(path, str(error.get("ctx", {}).get("error", error["msg"])))
    if kind in _TYPE_NAMES:
        return source.problem(path, f"expected {_TYPE_NAMES[kind]}, got {_show(value)}")
    ctx = error.get("ctx", {})
    if kind == "greater_than_equal":
        limit = ctx.get("ge")
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        return source.problem(path, f"must be {limit} or more, got {_show(value)}")
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return source.problem(path, f"needs at least {count} item{'s' if count != 1 else ''}")
    if kind == "string_too_short":
        return source.problem(path, "must not be empty")
    return source.problem(path, error["msg"])


def _misplaced(path: Path, levels: list[tuple[Path, Any]], source: Source) -> str | None:
    """Where an unknown key belongs when it is a key of another level: an enclosing one, or one nested here.

    ``on_event`` indented under ``wait_until`` belongs to the step; ``timeout`` beside
    ``wait_until`` belongs inside it. Saying so beats suggesting a lookalike key.
    """
    key, here = path[-1], path[:-1]
    enclosing = [(at, model) for at, model in levels if len(at) < len(here)]
    for depth, (at, model) in enumerate(reversed(enclosing), start=1):
        if key in _keys(model) and not _has_key(source, at, key):
            steps = "one level" if depth == 1 else f"{depth} levels"
            beside = f", in line with '{here[-1]}'" if depth == 1 and isinstance(here[-1], str) else ""
            return (f"unknown key '{key}' in {_level(here)}: move it up {steps}{beside}; "
                    f"it belongs to {_level(at)}, not to {_level(here)}")
    owner = next((model for at, model in levels if at == here), None)
    fields = owner.model_fields.items() if owner is not None and _is_model(owner) else ()
    for name, info in fields:
        child = _unwrap(info.annotation)
        field = info.alias or name
        if _is_model(child) and key in _keys(child) and isinstance(source.data, dict) and _has_key(source, here, field):
            return (f"unknown key '{key}' in {_level(here)}: move it into '{field}' (indent it under {field}); "
                    f"it belongs to {field}, not to {_level(here)}")
    return None


def _has_key(source: Source, at: Path, key: str | int) -> bool:
    node: Any = source.data
    for part in at:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict) and key in node


def _level(at: Path) -> str:
    """How a message names the mapping at ``at``: the step, wait_until, the journey's top level..."""
    if not at:
        return "the journey's top level"
    if isinstance(at[-1], int):
        return "the step" if at[:-1] == ("steps",) else f"an item of {at[-2] if len(at) > 1 else 'the list'}"
    return str(at[-1])


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _kind_message(kind: str, value: Any, default: str) -> str:
    keys = _KIND_KEYS[kind]
    if not isinstance(value, dict):
        return f"expected a mapping with one of {', '.join(keys)}, got {_show(value)}"
    present = [key for key in keys if key in value]
    if len(present) > 1:
        what = "a step does one thing" if kind == "step_kind" else "use one"
        return f"{what}: found {' and '.join(repr(k) for k in present)}; split them into separate items"
    for key in value:
        hint = did_you_mean(key, keys)
        if hint:
            return f"unknown key '{key}'.{hint} ({default})"
    return default if kind != "step_kind" else f"{default}; found only {', '.join(map(str, value)) or 'nothing'}"


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [info.alias or name for name, info in model.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional, leaving the type (or a tagged union)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            if any(isinstance(m, Discriminator) for m in annotation.__metadata__):
                return annotation
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _tagged(annotation: Any) -> dict[str, Any]:
    """The members of a discriminated union by tag."""
    union = typing.get_args(annotation)[0]
    members = {}
    for member in typing.get_args(union):
        tags = [m for m in getattr(member, "__metadata__", ()) if isinstance(m, Tag)]
        if tags:
            members[tags[0].tag] = member
    return members


def _resolve(loc: tuple[str | int, ...]) -> tuple[Path, Any, Any, list[tuple[Path, Any]]]:
    """The document path of a Pydantic location (without union tags), its type, its parent model,
    and the model of each mapping along the way (by its document path)."""
    annotation: Any = JourneyDocument
    parent: Any = None
    path: list[str | int] = []
    levels: list[tuple[Path, Any]] = []
    for part in loc:
        annotation = _unwrap(annotation)
        if typing.get_origin(annotation) is typing.Annotated:  # a tagged union: skip its tag
            members = _tagged(annotation)
            if part in members:
                annotation = members[part]
                continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            parent = annotation
            levels.append((tuple(path), annotation))
            field = next((f for n, f in annotation.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                annotation = None
            elif field.metadata:
                annotation = typing.Annotated[(field.annotation, *field.metadata)]
            else:
                annotation = field.annotation
        elif typing.get_origin(annotation) in (list, dict):
            parent = None
            annotation = typing.get_args(annotation)[-1]
        else:
            parent, annotation = None, None
        path.append(part)
    return tuple(path), annotation, parent, levels


__all__ = ["translate", "Literal"]
