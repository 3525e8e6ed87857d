"""The Segment Spec: checking incoming messages and turning them into event rows.

One function, :func:`normalize`, reads one message (as decoded JSON) and returns the
column values of its :class:`~engine.storage.models.Event` row, or raises
:class:`~engine.errors.PayloadError` naming every problem with its field path. The
spec's fields: ``type``, ``userId`` / ``anonymousId`` (one is required), ``messageId``,
``event``, ``name``, ``properties``, ``traits``, ``context``, ``integrations``,
``timestamp``, ``sentAt``, ``originalTimestamp``, and ``previousId`` / ``groupId``.

RudderStack sends the same spec, except that its SDKs put an ``identify``'s traits in
``context.traits`` only: :func:`normalize` reads them there when there are no top-level
``traits`` (docs/ingestion.md lists every difference between the two SDKs).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timezone
from collections.abc import Iterable
from typing import Any

import orjson

from engine.errors import PayloadError, Problem, did_you_mean

TYPES = ("identify", "track", "page", "screen", "group", "alias")
MAX_EVENT_BYTES = 32 * 1024  # Segment's limit for one message
# One batch request: RudderStack's SDKs send up to 4 MB (Segment's stay under 500 KB); a
# lower limit would make a RudderStack SDK drop a whole batch, since it never retries a 400.
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_ID_LENGTH = 255
# An id may be a whole number (3 and 3.0 alike: JSON has one kind of number) of 64 bits;
# beyond them JSON parsing rounds a number, so that it is no longer the id sent.
MIN_ID_NUMBER, MAX_ID_NUMBER = -(2**63 - 1), 2**63 - 1

_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt")


def normalize(
    message: Any,
    *,
    source: str,
    received_at: datetime,
    path: str = "",
    type_: str | None = None,
    batch_sent_at: datetime | None = None,
) -> dict[str, Any]:
    """Check one Segment message and return its event row's column values.

    Args:
        message: the decoded JSON of one message.
        source: the name of the API key that sent it; messageIds are unique per source.
        received_at: when the engine received the request (the server's clock).
        path: prefix of field paths in error messages, e.g. ``batch[3]``.
        type_: the type implied by the endpoint (``/v1/track``); a batch item names its own.
        batch_sent_at: the batch's ``sentAt``, used when an item has none of its own.

    Raises:
        PayloadError: every problem found, each with its field path.
    """
    problems: list[Problem] = []
    at = f"{path}." if path else ""

    def problem(field: str, text: str) -> None:
        problems.append(Problem(f"{at}{field}" if field else path, text))

    if not isinstance(message, dict):
        raise PayloadError("the message", [Problem(path or "body", f"expected a JSON object, got {_kind(message)}")])

    kind = type_ or message.get("type")
    if kind is None:
        problem("type", f"is required; one of {', '.join(TYPES)}")
    elif kind not in TYPES:
        problem("type", f"unknown type {kind!r}.{did_you_mean(kind, TYPES)} (expected one of {', '.join(TYPES)})".replace(". (", " ("))

    user_id = _identifier(message, "userId", problem)
    anonymous_id = _identifier(message, "anonymousId", problem)
    if user_id is None and anonymous_id is None and not _has_bad(problems, "userId", "anonymousId"):
        problem("userId", "userId or anonymousId is required; send the user's id, or a stable anonymous id for a visitor")

    message_id = _identifier(message, "messageId", problem)
    event_name = _text(message, "event", problem)
    name = _text(message, "name", problem)
    previous_id = _identifier(message, "previousId", problem)
    group_id = _identifier(message, "groupId", problem)
    if kind == "track" and not event_name and not _has_bad(problems, "event"):
        problem("event", "is required for a track call: the name of the action, e.g. 'Order Completed'")
    if kind == "alias" and previous_id is None and not _has_bad(problems, "previousId"):
        problem("previousId", "is required for an alias call: the id the user was known by before")
    if kind == "alias" and user_id is None and not _has_bad(problems, "userId"):
        problem("userId", "is required for an alias call: the id the user is known by now")
    if kind == "group" and group_id is None and not _has_bad(problems, "groupId"):
        problem("groupId", "is required for a group call")

    objects: dict[str, dict[str, Any]] = {}
    for field in _OBJECT_FIELDS:
        value = message.get(field)
        if value is None:
            objects[field] = {}
        elif isinstance(value, dict):
            objects[field] = value
        else:
            problem(field, f"expected a JSON object, got {_kind(value)}")

    traits = objects.get("traits", {})
    if kind == "identify" and not traits:
        # RudderStack's SDKs put an identify's traits in context.traits only. Other calls'
        # context.traits (both specs allow them on a track) describe the user as the client
        # last knew them, often a copy cached on a device: they stay in the context and
        # never update the profile; a group's top-level traits are the group's.
        in_context = objects.get("context", {}).get("traits")
        if isinstance(in_context, dict):
            traits = in_context
        elif in_context is not None:
            problem("context.traits", f"expected a JSON object of the user's traits, got {_kind(in_context)}")

    times: dict[str, datetime | None] = {}
    for field in _TIME_FIELDS:
        times[field] = _time(message, field, problem)

    if not problems:
        encoded = orjson.dumps(message)
        if len(encoded) > MAX_EVENT_BYTES:
            problem("", f"the message is {len(encoded)} bytes; a message may be at most {MAX_EVENT_BYTES} bytes (32 KB)")
        elif b"\\u0000" in encoded:
            # PostgreSQL cannot store NUL in text or JSONB: refuse it here, with its place.
            problem(_nul_path(message), "contains a NUL character (\\u0000), which cannot be stored; remove it")

    if problems:
        raise PayloadError("the message", problems)

    original = times["originalTimestamp"] or times["timestamp"]
    sent_at = times["sentAt"] or batch_sent_at
    timestamp = original or received_at
    if original is not None and sent_at is not None:
        # Correct the client's clock skew as Segment does: the time between the event
        # and the send is measured on the client's clock, and applied to ours (unless
        # the two are so far apart that the result is no date at all).
        with contextlib.suppress(OverflowError):
            timestamp = received_at - (sent_at - original)

    return {
        "source": source,
        "message_id": message_id or str(uuid.uuid4()),
        "type": kind,
        "event": event_name,
        "name": name,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "previous_id": previous_id,
        "group_id": group_id,
        "properties": objects["properties"],
        "traits": traits,
        "context": objects["context"],
        "integrations": objects["integrations"],
        "timestamp": timestamp,
        "original_timestamp": original,
        "sent_at": sent_at,
        "received_at": received_at,
    }


def parse_time(value: Any) -> datetime:
    """Parse an ISO-8601 time (every RFC 3339 one among them) into UTC; a time without a zone is taken as UTC.

    A time whose UTC falls outside years 1 to 9999 (0001-01-01T00:00:00+01:00) is the
    first or last moment that can be stored.

    Raises:
        ValueError: the value is not an ISO-8601 time.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 time string such as 2026-11-23T09:30:00Z, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows 't' and 'z'
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 time such as 2026-11-23T09:30:00Z") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        # In UTC: PostgreSQL refuses offsets beyond 15:59, RFC 3339 allows up to 23:59.
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def _time(message: dict[str, Any], field: str, problem: Any) -> datetime | None:
    value = message.get(field)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        problem(field, str(exc))
        return None


def whole_number(value: Any) -> int | None:
    """``value`` as an int when it is a whole JSON number (``3``, ``3.0``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value if isinstance(value, int) else None


def _identifier(message: dict[str, Any], field: str, problem: Any) -> str | None:
    value = message.get(field)
    if value is None:
        return None
    number = whole_number(value)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        problem(field, f"expected a string, got {_kind(value)}")
        return None
    if not isinstance(value, str) and (number is None or not MIN_ID_NUMBER <= number <= MAX_ID_NUMBER):
        problem(field, f"expected a string, or a whole number from {MIN_ID_NUMBER} to {MAX_ID_NUMBER}; got {value!r}")
        return None
    text = value if isinstance(value, str) else str(number)
    if len(text) > MAX_ID_LENGTH:
        problem(field, f"is {len(text)} characters long; at most {MAX_ID_LENGTH} are allowed")
        return None
    return text.strip() or None


def _text(message: dict[str, Any], field: str, problem: Any) -> str | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        problem(field, f"expected a string, got {_kind(value)}")
        return None
    if len(value) > MAX_ID_LENGTH:
        problem(field, f"is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed")
        return None
    return value.strip() or None


def _nul_path(value: Any, path: str = "") -> str:
    """Return the path of the first string (or key) holding a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else ""
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return ""
    for key, item in items:
        here = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        if isinstance(key, str) and "\x00" in key:
            return here
        found = _nul_path(item, here)
        if found:
            return found
    return ""


def _has_bad(problems: list[Problem], *fields: str) -> bool:
    return any(p.path.rsplit(".", 1)[-1] in fields for p in problems)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
