"""Journey counts: the figures of journey stats, kept in the transactions that change them.

Every step an enrollment runs writes trace rows (:mod:`engine.trace`). The ones stats
count (an enrollment entering, visiting a step, taking a split's path or a branch's case,
ending, converting after it ended) are also added up, as they are written, into
``journey_counts``: a row per journey, version, UTC day the enrollment *started*, and
what was counted. So stats for a journey with a million enrollments sum a few hundred
rows instead of joining millions of trace rows (docs/analytics.md, "How it is counted").

- :func:`keys_of` is the one rule of what a trace row counts as;
- :func:`tally` adds a batch's rows up, and :func:`write` adds them to the table in the
  batch's transaction (a statement per batch), the orchestrator calls both;
- :func:`rebuild` recounts the table from the trace with the same rule, for a database
  that kept a trace before the counts existed (migration 0011);
- :func:`read` sums the counts of a journey over a window of days.

Concurrent workers add to the same rows (today's, for a busy journey): each adds to its
own ``shard`` of them, so they do not wait for each other's row locks.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from engine.definitions import Journey
from engine.definitions.model import BranchStep, SplitStep
from engine.storage.models import Enrollment, JourneyCount, TraceEntry
from engine.storage.upsert import add_counts

#: The ``run`` row of a goal's clean-up path that stops at a wait step (the wait's visit).
CLEAN_UP = "a clean-up path stops"
#: How many rows per key concurrent writers spread over.
SHARDS = 16
#: The lengths of the key's texts: longer ones are cut (a branch case's condition source is
#: matched by its start), so that a key fits PostgreSQL's index entry whatever the characters.
DETAIL_LENGTH = 400
VALUE_LENGTH = 200


class Key(NamedTuple):
    """What one count is of. ``step`` is "" for the enrollment-wide counts:

    - ``entered``: an enrollment started;
    - ``ended``: it ended with status ``detail``, in the split paths ``value`` (:func:`variants_key`);
    - ``converted_later``: it had ended without converting, then reached the goal in time;

    and names a step for its visits (``run``, ``wait``, ``choose`` with the path taken, a
    branch's true ``condition``) and its ``end`` (``detail`` the reason, ``value`` the status).
    """

    step: str
    what: str
    detail: str
    value: str


def variants_key(variants: Mapping[str, str]) -> str:
    """The split paths an enrollment took, as one text: ``pick=a;tone=warm`` (sorted)."""
    return ";".join(f"{split}={path}" for split, path in sorted(variants.items()))[:VALUE_LENGTH]


def read_variants(text: str) -> dict[str, str]:
    """The inverse of :func:`variants_key`."""
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


def path_names(journey: Journey | None, variants: Mapping[str, str]) -> dict[str, str]:
    """The split paths an enrollment took by the names its journey file gives them: the
    runtime keeps ``control`` for a holdout path, whose name is ``holdout``."""
    names = dict(variants)
    for split_id, path in variants.items():
        step = _step(journey, split_id) if journey is not None else None
        if path == "control" and isinstance(step, SplitStep):
            names[split_id] = next((p.name for p in step.paths if p.holdout), path)
    return names


def keys_of(journey: Journey | None, step: str | None, what: str, detail: str | None, value: Any,
            variants: Mapping[str, str]) -> list[Key]:
    """What a trace row of an enrollment (in ``journey``, with the split paths ``variants``
    as the runtime keeps them) counts as."""
    detail = (detail or "")[:DETAIL_LENGTH]
    if what in ("converted", "end"):
        variants = path_names(journey, variants)
    if what == "enter":
        return [Key("", "entered", "", "")]
    if what == "converted":
        return [Key("", "converted_later", "", variants_key(variants))]
    keys: list[Key] = []
    if what == "end":
        status = (str(value) if value is not None else "unknown")[:VALUE_LENGTH]
        keys.append(Key("", "ended", status, variants_key(variants)))
        if step is not None:
            keys.append(Key(step, "end", detail, status))
        return keys
    if step is None:
        return keys
    if what in ("wait", "choose"):
        keys.append(Key(step, what, detail if what == "choose" else "", ""))
    elif what == "run":
        keys.append(Key(step, "run", detail if detail.startswith(CLEAN_UP) else "", ""))
    elif what == "condition" and value is True and journey is not None and isinstance(_step(journey, step), BranchStep):
        keys.append(Key(step, "condition", detail, ""))
    return keys


def _step(journey: Journey, step_id: str) -> Any:
    try:
        return journey.step(step_id)
    except KeyError:
        return None


Tally = Counter[tuple[str, int, date, Key]]


def tally(into: Tally, journey: Journey, row: Enrollment, entries: Iterable[Any], variants: Mapping[str, str]) -> None:
    """Add the trace ``entries`` (objects with ``step``, ``what``, ``detail``, ``value``) of
    enrollment ``row`` to ``into``."""
    day = _day(row.started_at)
    for entry in entries:
        for key in keys_of(journey, entry.step, entry.what, entry.detail, entry.value, variants):
            into[(row.journey_id, row.version, day, key)] += 1


def write(session: Session, counts: Tally) -> None:
    """Add ``counts`` to ``journey_counts``, in this transaction: one statement, keys in order."""
    if not counts:
        return
    shard = hash((os.getpid(), threading.get_ident())) % SHARDS
    rows = [
        {"journey_id": journey_id, "version": version, "day": day, "step": key.step, "what": key.what,
         "detail": key.detail, "value": key.value, "shard": shard, "count": count}
        for (journey_id, version, day, key), count in sorted(counts.items()) if count
    ]
    add_counts(session, JourneyCount, ["journey_id", "version", "day", "step", "what", "detail", "value", "shard"], rows)


def read(session: Session, journey_id: str, version: int | None, first: date, last: date) -> list[tuple[Key, int]]:
    """The counts of ``journey_id`` (one ``version``, or all) for enrollments started on the
    UTC days from ``first`` to ``last``, both included."""
    table = JourneyCount.__table__.c
    query = (
        select(table.step, table.what, table.detail, table.value, func.sum(table.count))
        .where(table.journey_id == journey_id, table.day.between(first, last))
        .group_by(table.step, table.what, table.detail, table.value)
    )
    if version is not None:
        query = query.where(table.version == version)
    return [(Key(step, what, detail, value), int(n)) for step, what, detail, value, n in session.execute(query)]


def rebuild(session: Session, journeys: Mapping[tuple[str, int], Journey]) -> int:
    """Recount ``journey_counts`` from the trace, with :func:`keys_of`; return the rows written.

    For a database whose trace predates the counts. It reads the trace in enrollment
    order, an enrollment at a time, so it needs no more memory than the largest
    enrollment's trace, but it reads every row: minutes for millions.
    """
    session.execute(delete(JourneyCount))
    counts: Tally = Counter()
    enrollments = select(Enrollment.id, Enrollment.journey_id, Enrollment.version, Enrollment.started_at,
                         Enrollment.state).subquery()
    trace = TraceEntry.__table__.c
    query = (
        select(enrollments.c.id, enrollments.c.journey_id, enrollments.c.version, enrollments.c.started_at,
               enrollments.c.state, trace.step, trace.what, trace.detail, trace.value)
        .join(enrollments, enrollments.c.id == trace.enrollment_id)
        .order_by(trace.enrollment_id, trace.id)
    )
    written = 0
    for row in session.execute(query.execution_options(yield_per=10_000)):
        journey = journeys.get((row.journey_id, row.version))
        variants = (row.state or {}).get("variant") or {}
        for key in keys_of(journey, row.step, row.what, row.detail, row.value, variants):
            counts[(row.journey_id, row.version, _day(row.started_at), key)] += 1
        if len(counts) >= 10_000:
            write(session, counts)
            written += len(counts)
            counts.clear()
    write(session, counts)
    return written + len(counts)


def _day(at: datetime) -> date:
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).date()
