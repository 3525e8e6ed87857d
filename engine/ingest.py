"""Ingestion: decode a request body, store its events, and hand them to the workers.

A 2xx means the events are committed: rows are written first, in one statement per
request, and queue messages are sent after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

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
        [Problem("body", f"is {size}+ bytes; a request may be at most {MAX_BATCH_BYTES} bytes (4 MB): send smaller batches")],
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
    for index, (item, path) in enumerate(zip(items, paths, strict=True)):
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
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # All rows travel as one JSON parameter: the statement text never changes, so
        # PostgreSQL and psycopg prepare it once, instead of parsing a VALUES list with
        # thousands of placeholders for every batch.
        result = connection.execute(_PG_INSERT, {"rows": orjson.dumps(unique).decode()})
    else:
        statement = insert_ignore(session, Event, None, ["source", "message_id"]).returning(Event.id)
        result = connection.execute(statement, unique)
    return sorted(result.scalars())


_COLUMNS = {
    "source": "text", "message_id": "text", "type": "text", "event": "text", "name": "text",
    "user_id": "text", "anonymous_id": "text", "previous_id": "text", "group_id": "text",
    "properties": "jsonb", "traits": "jsonb", "context": "jsonb", "integrations": "jsonb",
    "timestamp": "timestamptz", "original_timestamp": "timestamptz", "sent_at": "timestamptz",
    "received_at": "timestamptz",
}  # fmt: skip
_PG_INSERT = text(
    f"INSERT INTO events ({', '.join(_COLUMNS)}, attempts) "
    f"SELECT {', '.join(_COLUMNS)}, 0 FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    f"AS r({', '.join(f'{name} {kind}' for name, kind in _COLUMNS.items())}) "
    "ON CONFLICT (source, message_id) DO NOTHING RETURNING id"
)


class EventWriter:
    """Commits the events of many concurrent requests together (group commit).

    Each request hands its rows over and waits until they are committed; one background
    task takes everything that is waiting, inserts it in one statement, commits once,
    enqueues the new ids (a message per 100), then answers every waiting request. Under load
    groups grow by themselves; when idle a request waits for its own commit only.
    If a group fails, its requests are retried one by one, so one bad request fails
    alone and the others are still stored.
    """

    MAX_ROWS = 5000
    IN_FLIGHT = 4  # groups committing at once: overlaps the database round trips

    def __init__(self, services: Any) -> None:
        self.services = services
        self._pending: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Return once ``rows`` are committed (duplicates of stored messageIds are skipped).

        Raises:
            Exception: whatever the database raised for these rows.
        """
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # (Re)start on this loop: a test client may run the app on several loops in turn.
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run(self._wakeup), name="event-writer")
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((rows, future))
        self._wakeup.set()
        await future

    async def close(self) -> None:
        """Commit and enqueue what is waiting, and stop the background task."""
        while self._pending:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, wakeup: asyncio.Event) -> None:
        slots = asyncio.Semaphore(self.IN_FLIGHT)
        committing: set[asyncio.Task[None]] = set()
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                while self._pending:
                    await slots.acquire()
                    group: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
                    size = 0
                    while self._pending and (not group or size + len(self._pending[0][0]) <= self.MAX_ROWS):
                        rows, future = self._pending.pop(0)
                        group.append((rows, future))
                        size += len(rows)
                    task = asyncio.get_running_loop().create_task(self._commit_group(group))
                    committing.add(task)
                    task.add_done_callback(committing.discard)
                    task.add_done_callback(lambda _: slots.release())
        finally:
            if committing:
                await asyncio.gather(*committing, return_exceptions=True)

    async def _commit_group(self, group: list[tuple[list[dict[str, Any]], asyncio.Future[None]]]) -> None:
        answers: list[tuple[asyncio.Future[None], BaseException | None]] = []
        try:
            ids = await run_in_threadpool(self._commit, [row for rows, _ in group for row in rows])
            answers = [(future, None) for _, future in group]
        except Exception:  # noqa: BLE001 - find the request that failed, store the others
            ids = []
            for rows, future in group:
                try:
                    ids += await run_in_threadpool(self._commit, rows)
                    answers.append((future, None))
                except Exception as exc:  # noqa: BLE001
                    answers.append((future, exc))
        if ids:
            # Queued before answered: a client that got its 200 finds the work on the queue.
            # (If the broker is down, enqueue_events says so and the sweeper sends them later.)
            await run_in_threadpool(self.services.enqueue_events, ids)
        for future, error in answers:
            _resolve(future, error)

    def _commit(self, rows: list[dict[str, Any]]) -> list[int]:
        with self.services.sessions.begin() as session:
            return store(session, rows)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the request was cancelled (client went away): nothing to tell
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
