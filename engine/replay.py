"""Replay: the events stored in a database, over a window, through two twins.

One twin runs the journeys given (the "changed" set), the other the versions deployed
now in that database. Both start from the customer profiles as they stood at the
window's start and take the window's events in timestamp order, streamed from the
database in chunks and fed in batches (:meth:`engine.twin.Twin.send_many`: the events
up to the next due moment, each applied at its own instant through the workers' batch
path); the outcome of each is a :class:`Summary` read from its rows. The two twins run
in two processes, each reading the same snapshot (PostgreSQL: one exported snapshot).

The stored database is only read: on PostgreSQL in one ``READ ONLY``, ``REPEATABLE
READ`` transaction (one snapshot for the events and the profiles), on SQLite through a
``mode=ro`` connection. Nothing is sent: the twins' channels are recording stubs.

What the profiles at the window's start are made of (see docs/runtime.md, "Replay"):

- traits: every ``identify`` stored before the start, folded in timestamp order (exact
  while the events table keeps them); the time zone from the same identifies, else the
  one stored now;
- stage: the last stage change before the start; points: the ledger before the start;
  referral codes made before the start; consents recorded before the start and
  suppressions added before it;
- identities: the user id, and the anonymous ids linked before the start. Merges are
  taken as they stand now (an anonymous profile merged during the window starts merged).

Not reconstructed: consent rows changed during the window (a row keeps only the latest
choice, so one changed after the start is left out), and the deliveries made before the
start, which frequency caps would count.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, func, select
from sqlalchemy.orm import Session

from engine.definitions import Journey
from engine.deploy import compile_version
from engine.profiles import time_zone_after
from engine.settings import Settings
from engine.storage.models import (
    AnonymousId,
    Consent,
    Customer,
    Delivery,
    Enrollment,
    Event,
    JourneyRecord,
    JourneyVersion,
    PointsEntry,
    ReferralCode,
    StageChange,
    Suppression,
)
from engine.twin import Twin, migrated_database

#: Events read from the database per round trip (a server-side cursor on PostgreSQL).
CHUNK = 2000


@dataclass
class Summary:
    """What one twin did over the window: entries, sends, holds and conversions."""

    entered: Counter[str] = field(default_factory=Counter)
    sent: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    held: Counter[tuple[str, str]] = field(default_factory=Counter)
    converted: Counter[str] = field(default_factory=Counter)
    other: Counter[tuple[str, str]] = field(default_factory=Counter)

    def rows(self) -> dict[str, int]:
        """Every figure under a label: ``entered cart``, ``sent cart/reminder email``, ``held cart: reason``."""
        rows: dict[str, int] = {}
        rows.update({f"entered {j}": n for j, n in self.entered.items()})
        rows.update({f"sent {j}/{s} {c}": n for (j, s, c), n in self.sent.items()})
        rows.update({f"held {j}: {r}": n for (j, r), n in self.held.items()})
        rows.update({f"converted {j}": n for j, n in self.converted.items()})
        rows.update({f"{status} {j}": n for (j, status), n in self.other.items()})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """As JSON: entered and converted by journey, sends by journey/step/channel, holds by journey and reason."""
        return {
            "entered": dict(self.entered),
            "sent": [{"journey": j, "step": s, "channel": c, "count": n} for (j, s, c), n in sorted(self.sent.items())],
            "held": [{"journey": j, "reason": r, "count": n} for (j, r), n in sorted(self.held.items())],
            "converted": dict(self.converted),
            "other": [{"journey": j, "status": s, "count": n} for (j, s), n in sorted(self.other.items())],
        }


def summarize(session: Session) -> Summary:
    """Read a twin's outcome from its rows."""
    summary = Summary()
    for journey, people in session.execute(
        select(Enrollment.journey_id, func.count(Enrollment.customer_id.distinct())).group_by(Enrollment.journey_id)
    ):
        summary.entered[journey] = people
    for journey, n in session.execute(
        select(Enrollment.journey_id, func.count()).where(Enrollment.status == "converted").group_by(Enrollment.journey_id)
    ):
        summary.converted[journey] = n
    for journey, step, channel, status, error, n in session.execute(
        select(Delivery.journey_id, Delivery.step, Delivery.channel, Delivery.status, Delivery.error, func.count())
        .group_by(Delivery.journey_id, Delivery.step, Delivery.channel, Delivery.status, Delivery.error)
    ):
        if status == "sent":
            summary.sent[(journey, step, channel)] += n
        elif status == "held":
            summary.held[(journey, error or "no reason")] += n
        else:  # pending (deferred past the window's end), failed, dead
            summary.other[(journey, status)] += n
    return summary


@dataclass
class Result:
    """A replay's outcome: the window, how many events, and both twins' summaries."""

    start: dt.datetime
    end: dt.datetime
    events: int
    customers: int
    deployed: Summary
    changed: Summary
    deployed_journeys: dict[str, int]
    changed_journeys: list[str]
    #: stored events the twins refused (not a valid Segment message today), with why
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """One JSON document."""
        return {
            "window": {"since": self.start.isoformat(), "until": self.end.isoformat()},
            "events": self.events, "customers_at_start": self.customers, "skipped": self.skipped,
            "journeys": {"deployed": self.deployed_journeys, "changed": self.changed_journeys},
            "deployed": self.deployed.to_dict(), "changed": self.changed.to_dict(),
            "approximations": APPROXIMATIONS,
        }


#: What replay cannot reconstruct, printed with every result.
APPROXIMATIONS = [
    "profiles at the start: traits folded from the identifies stored before it; merges as they stand now",
    "consents changed during the window are left out (a row keeps only the latest choice)",
    "deliveries made before the window are not counted by frequency caps",
    "events go to the twins in batches of up to a minute that end at the next due timer or send: what an event "
    "causes at once, or schedules before the batch's last event, happens at that last event, up to a minute late",
]


def read_only(database_url: str) -> Engine:
    """An engine that can only read ``database_url`` (SQLite: ``mode=ro``; PostgreSQL: see :func:`snapshot`)."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1] if ":///" in database_url else ""
        if not path or path == ":memory:":
            raise ValueError("DATABASE_URL names an in-memory SQLite database: there is nothing stored to replay")
        return create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    return create_engine(database_url, pool_size=1, max_overflow=0)


@contextmanager
def snapshot(engine: Engine, shared: str | None = None) -> Iterator[Connection]:
    """One connection in a read-only transaction (on PostgreSQL one REPEATABLE READ snapshot); rolled back after.

    ``shared``: on PostgreSQL, the id of a snapshot another transaction exported, to read the same.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if shared is not None:
                connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{shared}'")
        try:
            yield connection
        finally:
            connection.rollback()


def deployed_journeys(session: Session, directory: Path) -> dict[str, Journey]:
    """The current version of every active deployed journey, compiled from its stored copy."""
    rows = session.execute(
        select(JourneyVersion).join(JourneyRecord, (JourneyRecord.id == JourneyVersion.journey_id)
                                    & (JourneyRecord.current_version == JourneyVersion.version))
        .where(JourneyRecord.status == "active")
    ).scalars()
    return {r.journey_id: compile_version(r.journey_id, r.version, r.source, r.templates, directory) for r in rows}


def stream_events(session: Session, start: dt.datetime, end: dt.datetime) -> Iterator[Event]:
    """The events stored with a timestamp in [start, end), oldest first, read ``CHUNK`` at a time."""
    query = (select(Event).where(Event.timestamp >= start, Event.timestamp < end)
             .order_by(Event.timestamp, Event.id).execution_options(yield_per=CHUNK))
    for event in session.scalars(query):
        yield event
        session.expunge(event)  # keep the identity map from holding every row read


def segment_message(event: Event) -> dict[str, Any]:
    """A stored event as the Segment message it came in as."""
    message: dict[str, Any] = {
        "type": event.type, "messageId": f"{event.source}:{event.message_id}",
        "timestamp": event.timestamp.isoformat(),
        "properties": dict(event.properties or {}), "traits": dict(event.traits or {}),
        "context": dict(event.context or {}), "integrations": dict(event.integrations or {}),
    }
    for key, value in (("event", event.event), ("name", event.name), ("userId", event.user_id),
                       ("anonymousId", event.anonymous_id), ("previousId", event.previous_id),
                       ("groupId", event.group_id)):
        if value is not None:
            message[key] = value
    if event.type != "identify":
        message.pop("traits")
    return message


class Profiles:
    """Customers as they stood at ``start``, copied into the twins at their first event in the window."""

    def __init__(self, session: Session, start: dt.datetime, twins: Iterable[Twin]) -> None:
        self.session, self.start, self.twins = session, start, list(twins)
        self.seen: set[str] = set()
        self.seeded: set[int] = set()

    def before(self, event: Event) -> None:
        """Seed the customer each of ``event``'s ids belonged to at the start, if not done yet."""
        for ident, anonymous in ((event.user_id, False), (event.anonymous_id, True), (event.previous_id, None)):
            if not ident or ident in self.seen:
                continue
            self.seen.add(ident)
            customer = self._owner(ident, anonymous)
            if customer is not None and customer.id not in self.seeded:
                self.seeded.add(customer.id)
                self._seed(customer)

    def _owner(self, ident: str, anonymous: bool | None) -> Customer | None:
        found = None
        if anonymous is not True:
            found = self.session.scalar(select(Customer).where(Customer.external_id == ident))
        if found is None and anonymous is not False:
            found = self.session.scalar(select(Customer).join(AnonymousId, AnonymousId.customer_id == Customer.id)
                                        .where(AnonymousId.anonymous_id == ident, AnonymousId.created_at < self.start))
        while found is not None and found.merged_into_id is not None:
            found = self.session.get(Customer, found.merged_into_id)
        if found is None or found.first_seen_at >= self.start:
            return None
        return found

    def _seed(self, customer: Customer) -> None:
        s, start = self.session, self.start
        ids = [customer.id, *s.scalars(select(Customer.id).where(Customer.merged_into_id == customer.id))]
        traits: dict[str, Any] = {}
        zone = None
        for trait_set, context in s.execute(
            select(Event.traits, Event.context).where(Event.customer_id.in_(ids), Event.type == "identify",
                                                     Event.timestamp < start).order_by(Event.timestamp, Event.id)
        ):
            traits.update(trait_set or {})
            zone = time_zone_after("identify", trait_set, context, zone)
        stage = s.scalar(select(StageChange.to_stage).where(StageChange.customer_id.in_(ids), StageChange.at < start)
                         .order_by(StageChange.at.desc(), StageChange.id.desc()).limit(1))
        points = s.scalar(select(func.coalesce(func.sum(PointsEntry.amount), 0))
                          .where(PointsEntry.customer_id.in_(ids), PointsEntry.at < start))
        anonymous = list(s.execute(select(AnonymousId.anonymous_id, AnonymousId.created_at)
                                   .where(AnonymousId.customer_id.in_(ids), AnonymousId.created_at < start)))
        codes = list(s.execute(select(ReferralCode.code, ReferralCode.program, ReferralCode.created_at)
                               .where(ReferralCode.customer_id.in_(ids), ReferralCode.created_at < start)))
        consents = list(s.execute(select(Consent.channel, Consent.topic, Consent.subscribed, Consent.at, Consent.source)
                                  .where(Consent.customer_id.in_(ids), Consent.at < start)))
        suppressions = list(s.execute(select(Suppression.channel, Suppression.address, Suppression.reason, Suppression.at)
                                      .where(Suppression.customer_id.in_(ids), Suppression.at < start)))
        for twin in self.twins:
            with twin.services.sessions.begin() as session:
                row = Customer(external_id=customer.external_id, traits=traits, timezone=zone or customer.timezone,
                               stage=stage, first_seen_at=customer.first_seen_at, last_seen_at=customer.first_seen_at,
                               updated_at=start)
                session.add(row)
                session.flush()
                session.add_all(AnonymousId(anonymous_id=a, customer_id=row.id, created_at=at) for a, at in anonymous)
                session.add_all(ReferralCode(code=c, customer_id=row.id, program=p, created_at=at) for c, p, at in codes)
                session.add_all(Consent(customer_id=row.id, channel=ch, topic=t, subscribed=sub, at=at, source=src)
                                for ch, t, sub, at, src in consents)
                session.add_all(Suppression(channel=ch, address=addr, customer_id=row.id, reason=r, at=at)
                                for ch, addr, r, at in suppressions)
                if stage is not None:
                    session.add(StageChange(customer_id=row.id, from_stage=None, to_stage=stage, at=start,
                                            reason="as the replay window started"))
                if points:
                    session.add(PointsEntry(customer_id=row.id, amount=points, reason="opening balance", at=start))


@dataclass
class Run:
    """What one twin's run returns: events taken, customers copied in, its summary, the events it refused."""

    events: int
    customers: int
    summary: Summary
    skipped: list[str]


def replay(database_url: str, changed: Iterable[Journey], start: dt.datetime, end: dt.datetime, *,
           settings: Settings | None = None, directory: Path, parallel: bool | None = None) -> Result:
    """Replay the events stored in ``database_url`` over [start, end) through the deployed and the ``changed`` journeys.

    Nothing is written to that database and nothing is sent. The twins run until ``end``.

    Args:
        directory: an empty directory for the run's files: the deployed versions' templates, the
            twins' databases.
        parallel: run the two twins in two processes (default: when the machine has more than
            one core), each reading the same snapshot of the database (on PostgreSQL an
            exported snapshot); otherwise one after the other in this process.
    """
    changed = list(changed)
    directory.mkdir(parents=True, exist_ok=True)
    if parallel is None:
        parallel = (os.cpu_count() or 1) > 1
    engine = read_only(database_url)
    try:
        with snapshot(engine) as connection, Session(bind=connection) as session:
            versions = _versions(session)
            shared = _export_snapshot(connection) if parallel else None
            if parallel and (shared is not None or connection.dialect.name == "sqlite"):
                migrated_database().dispose()  # migrate once, here: both processes start from the copy
                now, other = _in_processes([(database_url, None, start, end, settings, directory, "deployed", shared),
                                            (database_url, changed, start, end, settings, directory, "changed", shared)])
            else:
                now = run_twin(session, None, start, end, settings, directory, "deployed")
                other = run_twin(session, changed, start, end, settings, directory, "changed")
    finally:
        engine.dispose()
    return Result(start, end, now.events, now.customers, now.summary, other.summary, versions,
                  [j.id for j in changed], now.skipped)


def run_twin(session: Session, journeys: list[Journey] | None, start: dt.datetime, end: dt.datetime,
             settings: Settings | None, directory: Path, name: str) -> Run:
    """The window's events, streamed from ``session``, through a twin of ``journeys`` (None: the deployed versions).

    The customers known at the start are copied in at their first event; the events go
    in batches (:meth:`~engine.twin.Twin.send_many`); the twin runs until ``end``.
    """
    if journeys is None:
        journeys = list(deployed_journeys(session, directory).values())
    # The twin's rows (every event of the window among them) go to a throwaway file,
    # so that memory holds a chunk of events, not the window.
    with Twin(journeys, start=start, settings=settings, database=directory / f"{name}.db") as twin:
        _throwaway(twin)
        profiles = Profiles(session, start, (twin,))
        read = 0

        def messages() -> Iterator[dict[str, Any]]:
            nonlocal read
            for event in stream_events(session, start, end):
                profiles.before(event)
                read += 1
                yield segment_message(event)

        refused = twin.send_many(messages())
        twin.advance_to(end)
        return Run(read - len(refused), len(profiles.seeded), twin.read(summarize), [why for _, why in refused])


def _export_snapshot(connection: Connection) -> str | None:
    """PostgreSQL: the id of this transaction's snapshot, for the other processes to read the same; else None."""
    if connection.dialect.name != "postgresql":
        return None
    if connection.exec_driver_sql("SELECT pg_is_in_recovery()").scalar_one():
        return None  # a hot standby cannot export one: the twins run one after the other
    return str(connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())


def _twin_process(sender: Any, args: tuple[Any, ...]) -> None:
    database_url, journeys, start, end, settings, directory, name, shared = args
    try:
        engine = read_only(database_url)
        try:
            with snapshot(engine, shared) as connection, Session(bind=connection) as session:
                run = run_twin(session, journeys, start, end, settings, directory, name)
        finally:
            engine.dispose()
        sender.send(("ok", run))
    except BaseException as exc:  # noqa: BLE001 - told to the parent, which raises it
        try:
            sender.send(("error", exc))
        except Exception:  # noqa: BLE001 - not picklable: its text then
            sender.send(("error", RuntimeError(f"{name} twin: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")))
    finally:
        sender.close()


def _in_processes(calls: list[tuple[Any, ...]]) -> list[Run]:
    """Each twin's run in a process of its own (forked: the journeys need no pickling); their runs, in order."""
    context = multiprocessing.get_context("fork")
    started = []
    for args in calls:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_twin_process, args=(sender, args), name=f"replay-{args[6]}", daemon=True)
        process.start()
        sender.close()
        started.append((process, receiver))
    runs, failure = [], None
    for process, receiver in started:
        try:
            status, value = receiver.recv()
        except EOFError:
            status, value = "error", RuntimeError(f"the {process.name} process died (exit code {process.exitcode})")
        process.join()
        if status == "ok":
            runs.append(value)
        elif failure is None:
            failure = value
    if failure is not None:
        raise failure
    return runs


def _throwaway(twin: Twin) -> None:
    """No fsync and no write-ahead log for a twin's file: it is deleted after the replay, a crash loses nothing.

    One connection uses it: the rollback journal is kept in memory (a failed batch still
    rolls back), the pages it reads most in a 64 MiB cache.
    """
    connection = twin.services.engine.raw_connection()
    try:
        for pragma in ("journal_mode=MEMORY", "synchronous=OFF", "locking_mode=EXCLUSIVE", "temp_store=MEMORY",
                       "cache_size=-65536"):
            connection.driver_connection.execute(f"PRAGMA {pragma}")  # type: ignore[union-attr]
    finally:
        connection.close()


def _versions(session: Session) -> dict[str, int]:
    return dict(session.execute(select(JourneyRecord.id, JourneyRecord.current_version)
                                .where(JourneyRecord.status == "active")).all())


__all__ = ["APPROXIMATIONS", "CHUNK", "Profiles", "Result", "Run", "Summary", "deployed_journeys", "read_only", "replay",
           "run_twin", "segment_message", "snapshot", "stream_events", "summarize"]
