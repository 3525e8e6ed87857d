"""Ingestion: decode a request body, store its events, and hand them to the workers.

A 2xx means the events are committed: rows are written first, in one statement per
request, and queue messages are sent after the commit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from engine.errors import PayloadError, Problem
from engine.segment import MAX_BATCH_BYTES, normalize, parse_time
from engine.storage.models import Event
from engine.storage.upsert import insert_ignore


@dataclass
class Outcome:
    """What happened to the messages of one request."""

    received: int = 0
    stored: list[int] = field(default_factory=list)  # ids of new rows (duplicates excluded)
    rejected: list[tuple[int, list[Problem]]] = field(default_factory=list)  # (index, problems)

    @property
    def accepted(self) -> int:
        """How many messages were accepted (new or already stored)."""
        return self.received - len(self.rejected)


def decode_body(raw: bytes, content_encoding: str | None) -> Any:
    """Decode a request body (optionally gzip-compressed) into JSON, within Segment's limits.

    Raises:
        PayloadError: the body is too large, not valid gzip, or not valid JSON.
    """
    if len(raw) > MAX_BATCH_BYTES and content_encoding != "gzip":
        raise _too_large(len(raw))
    if content_encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, MAX_BATCH_BYTES + 1)
        except zlib.error as exc:
            raise PayloadError("the request", [Problem("body", f"is not valid gzip: {exc}")]) from None
        if len(raw) > MAX_BATCH_BYTES or inflater.unconsumed_tail:
            raise _too_large(len(raw))
    elif content_encoding not in (None, "", "identity"):
        raise PayloadError(
            "the request",
            [Problem("Content-Encoding", f"unsupported encoding {content_encoding!r}; send gzip or none")],
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("the request", [Problem("body", f"is not valid JSON: {exc}")]) from None


def _too_large(size: int) -> PayloadError:
    return PayloadError(
        "the request",
        [Problem("body", f"is {size}+ bytes; a request may be at most {MAX_BATCH_BYTES} bytes (500 KB): send smaller batches")],
    )


def prepare(body: Any, *, source: str, received_at: datetime, type_: str | None) -> tuple[list[dict[str, Any]], Outcome]:
    """Check every message of a request; return the rows to store and the outcome so far.

    ``type_`` is the endpoint's type (``track``...) or ``None`` for ``/v1/batch``.

    Raises:
        PayloadError: the request as a whole is unusable (not an object, no batch array).
    """
    if not isinstance(body, dict):
        raise PayloadError("the request", [Problem("body", "expected a JSON object")])
    if type_ is not None:
        items, paths = [body], [""]
        batch_sent_at = None
    else:
        batch = body.get("batch")
        if not isinstance(batch, list):
            raise PayloadError("the request", [Problem("batch", "is required: an array of messages, each with a type")])
        items, paths = batch, [f"batch[{i}]" for i in range(len(batch))]
        try:
            batch_sent_at = parse_time(body["sentAt"]) if body.get("sentAt") is not None else None
        except ValueError as exc:
            raise PayloadError("the request", [Problem("sentAt", str(exc))]) from None
    outcome = Outcome(received=len(items))
    rows: list[dict[str, Any]] = []
    for index, (item, path) in enumerate(zip(items, paths)):
        try:
            rows.append(
                normalize(item, source=source, received_at=received_at, path=path, type_=type_, batch_sent_at=batch_sent_at)
            )
        except PayloadError as exc:
            outcome.rejected.append((index, exc.problems))
    return rows, outcome


def store(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` in one statement, skipping messageIds this source already sent.

    Returns:
        The ids of the rows that are new; a client's retry adds none.
    """
    if not rows:
        return []
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:  # a messageId repeated inside one batch: the first one counts
        first.setdefault((row["source"], row["message_id"]), row)
    unique = list(first.values())
    statement = insert_ignore(session, Event, unique, ["source", "message_id"]).returning(Event.id)
    return sorted(session.execute(statement).scalars())
