"""The twin: the engine's real pipeline in memory, on a virtual clock.

:class:`Twin` builds :class:`~engine.services.Services` the way a process does, except
for four parts:

- the database is an in-memory SQLite database on one shared connection, migrated by
  the same Alembic revisions (once per process, into a template copied for each twin);
- the broker is dramatiq's :class:`~dramatiq.brokers.stub.StubBroker`, drained in this
  thread by calling the actors' functions; a delayed message (a delivery retry) becomes
  due at the virtual clock plus its delay;
- every installed channel is a recording :class:`~channels.stub.StubChannel` that
  requires what the real adapter requires (an email needs an address);
- one :class:`VirtualClock`, ``services.clock``, which every part reads.

Everything else is production code: the ingestion the API uses, the orchestrator, the
runtime, profiles, policy (consent, suppression, caps, quiet hours), rendering, the
deliverer, and the scheduler's ``fire_due`` and ``sweep``, which fire timers and release
deferred sends. The driver loop takes the earliest input (a recorded event, a due timer,
a deferred send, a delayed message), moves the clock to its moment, applies it, and
drains the queues until nothing is left at that instant. Events go before timers at the
same instant (docs/runtime.md). :meth:`Twin.send_many` takes many events in batches
through the workers' batch path instead, as ``journey replay`` does.

The outputs are the database rows themselves, read by the small query functions below:
deliveries with their statuses and reasons, trace rows, enrollments, stage history,
points, referral codes. ``journey simulate``, :class:`engine.testing.JourneyTest` and
the demo (:mod:`engine.demo`, a twin per sample scene) are built on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import itertools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import LRUCache

from channels.stub import StubChannel
from engine import deploy, ingest, profiles
from engine.definitions import Journey
from engine.runtime import EnrollmentState, Trace
from engine.scheduler import Scheduler, not_held_by_a_pause
from engine.segment import parse_time
from engine.trace import turn_aways as explain_turn_aways
from engine.services import Services
from engine.settings import Settings
from engine.storage.db import begin_immediate, make_engine, make_sessionmaker, sqlite_pragmas, upgrade
from engine.storage.models import (
    Customer,
    Delivery,
    Enrollment,
    Event,
    PointsEntry,
    Referral,
    ReferralCode,
    StageChange,
    Timer,
    TraceEntry,
)
from engine.unit_of_work import UnitOfWork
from engine.workers.actors import DELIVERIES_QUEUE, EVENTS_QUEUE, TIMERS_QUEUE

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How far past the last event the twin runs when told no end: far enough for any shipped
#: journey, bounded so that a journey that loops through waits still stops.
DEFAULT_HORIZON = dt.timedelta(days=365)
#: Where a twin's clock starts unless told otherwise: a Monday, 09:00 UTC.
DEFAULT_START = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone.utc)
#: The ingestion source (API key name) of the events a twin is fed.
SOURCE = "twin"
#: :meth:`Twin.send_many`: how long after its first event a batch may run, and how many events it may hold.
BATCH_SPAN = dt.timedelta(minutes=1)
BATCH_SIZE = 500
#: Rounds of firing and releasing at one instant before the loop is taken to be stuck.
MAX_ROUNDS_AT_ONE_INSTANT = 50


@dataclass
class VirtualClock:
    """A clock for ``Services.clock`` that reads ``current``, which its owner moves."""

    current: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.current


class TwinStuck(RuntimeError):
    """The driver loop made no progress at one instant (a timer held back for good)."""


# -- the driver loop's steps, shared with the differential test ----------------------------


_DUE_WORK = select(
    select(func.min(Timer.due_at)).where(Timer.fired_at.is_(None), Timer.enqueued_at.is_(None)).scalar_subquery(),
    select(func.min(Timer.enqueued_at)).where(Timer.fired_at.is_(None), Timer.enqueued_at.is_not(None),
                                              not_held_by_a_pause())
    .scalar_subquery(),
    select(func.min(Delivery.not_before)).where(
        Delivery.status == "pending", Delivery.not_before.is_not(None), Delivery.enqueued_at.is_(None)
    ).scalar_subquery(),
)


def due_work(services: Services) -> tuple[dt.datetime | None, dt.datetime | None]:
    """When the scheduler has work next: (a timer to fire, a deferred send to release).

    A timer is due at ``due_at``, as :meth:`Scheduler.fire_due` claims it; one enqueued and
    not fired (its message lost) again ``JOURNEY_SWEEP_AFTER`` after that enqueue, as
    the sweep claims it, unless its journey is paused: then it waits for the resume
    (:func:`~engine.scheduler.not_held_by_a_pause`, the sweep's rule). A deferred send is
    due at its ``not_before``.
    """
    with services.engine.connect() as connection:  # one statement, built once: the loop asks before every step
        timer, again, deferred = connection.execute(_DUE_WORK).one()
    retry = _aware(again) + services.settings.sweep_after + dt.timedelta(microseconds=1) if again is not None else None
    return _earliest(_aware(timer), retry), _aware(deferred)


def next_due(services: Services) -> dt.datetime | None:
    """The earliest moment at which the scheduler has work (see :func:`due_work`)."""
    return _earliest(*due_work(services))


def fire_and_release(services: Services, now: dt.datetime, settle: Callable[[], None], *,
                     fire: bool = True, release: bool = True) -> None:
    """Do at ``now`` what the scheduler process does: fire the due timers, then sweep.

    The sweep (:meth:`Scheduler.sweep`) releases the sends deferred until ``now`` exactly
    as production does; ``settle`` waits for (or, in the twin, runs) what each caused.
    ``fire`` / ``release``: skip a step known to have nothing to do.
    """
    scheduler = Scheduler(services)
    if fire:
        scheduler.fire_due(now)
        settle()
    if release:
        scheduler.sweep(now)
        settle()


def fast_forward(
    services: Services,
    clock: VirtualClock,
    until: dt.datetime | None,
    settle: Callable[[], None],
    *,
    inclusive: bool = True,
    also: Callable[[], dt.datetime | None] = lambda: None,
    max_rounds: int | None = None,
) -> int:
    """Move ``clock`` through the scheduler's work due before ``until``, earliest first; return the rounds.

    Args:
        until: stop there (None: when nothing is left); ``inclusive``: work due exactly
            at ``until`` goes too.
        settle: called after each step, until the work it caused is done.
        also: another source of due moments (the twin's delayed queue messages), which
            ``settle`` runs.
        max_rounds: stop after that many rounds (a driver of real workers may bound itself).

    Raises:
        TwinStuck: the same instant came round ``MAX_ROUNDS_AT_ONE_INSTANT`` times.
    """
    rounds, repeats, last = 0, 0, None
    while max_rounds is None or rounds < max_rounds:
        timer, deferred = due_work(services)
        moment = _earliest(timer, deferred, also())
        if moment is None or (until is not None and (moment > until if inclusive else moment >= until)):
            break
        moment = max(clock.current, moment)
        repeats = repeats + 1 if moment == last else 0
        if repeats >= MAX_ROUNDS_AT_ONE_INSTANT:
            raise TwinStuck(f"no progress at {moment.isoformat()}: a timer or send stays due; see the events' error column")
        clock.current = last = moment
        fire_and_release(services, moment, settle, fire=timer is not None and timer <= moment,
                         release=deferred is not None and deferred <= moment)
        if (timer is None or timer > moment) and (deferred is None or deferred > moment):
            settle()  # only a delayed message was due
        rounds += 1
    return rounds


# -- the twin's parts -------------------------------------------------------------------------


class TwinBroker(StubBroker):
    """dramatiq's StubBroker on a virtual clock, drained in the caller's thread.

    A message enqueued with a ``delay`` waits until ``clock() + delay`` instead of a
    wall-clock time; :meth:`drain` runs every message that is due.
    """

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        super().__init__()
        self.clock = clock
        self._delayed: list[tuple[dt.datetime, int, dramatiq.Message[Any]]] = []
        self._order = itertools.count()

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Enqueue ``message``; with ``delay`` (milliseconds), due that long after the virtual now."""
        if delay is None:
            return super().enqueue(message)
        due = self.clock() + dt.timedelta(milliseconds=delay)
        heapq.heappush(self._delayed, (due, next(self._order), message))
        return message

    def next_delayed(self) -> dt.datetime | None:
        """When the earliest delayed message is due."""
        return self._delayed[0][0] if self._delayed else None

    def drain(self, only: str | None = None) -> int:
        """Run every message that is due now, and what they cause, until none is left; return how many ran.

        Deliveries go first, then timers, then events, as a worker's priorities order
        them. A message whose actor raises is retried with the actor's backoff (on the
        virtual clock), at most its ``max_retries`` times, as dramatiq's Retries would.
        ``only``: run the messages of that queue alone, and leave the others queued.
        """
        ran = 0
        while True:
            now = self.clock()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, message = heapq.heappop(self._delayed)
                super().enqueue(message)
            data = self._next_message(only)
            if data is None:
                return ran
            message = dramatiq.Message.decode(data)
            actor = self.get_actor(message.actor_name)
            try:
                actor.fn(*message.args, **message.kwargs)
            except Exception:  # noqa: BLE001 - a worker retries; so does the twin
                retries = int(message.options.get("retries", 0))
                if retries >= actor.options.get("max_retries", 0):
                    log.warning("twin: %s gave up after %d retries", message.actor_name, retries, exc_info=True)
                else:
                    backoff = actor.options.get("min_backoff", 1000) * 2**retries
                    backoff = min(backoff, actor.options.get("max_backoff", backoff))
                    self.enqueue(message.copy(options={"retries": retries + 1}), delay=int(backoff))
            ran += 1

    def _next_message(self, only: str | None = None) -> bytes | None:
        names = [only] if only is not None else sorted((q for q in self.queues if q not in self.delay_queues), key=_rank)
        for name in names:
            queue = self.queues.get(name)
            if queue is not None and not queue.empty():
                data = queue.get_nowait()
                queue.task_done()
                return data
        return None


def _rank(queue_name: str) -> tuple[int, str]:
    order = {TIMERS_QUEUE: 1, EVENTS_QUEUE: 2}
    return (0 if queue_name.startswith(DELIVERIES_QUEUE) else order.get(queue_name, 3), queue_name)


_template: tuple[sqlite3.Connection, Engine] | None = None
# The twins' compiled statements, keyed by SQLAlchemy with the (shared) dialect.
_COMPILED: LRUCache[Any, Any] = LRUCache(1000)
_template_lock = threading.Lock()


def migrated_database(path: str | Path | None = None) -> Engine:
    """An engine on a new in-memory SQLite database at the newest revision, on one connection.

    ``path``: a (new, throwaway) file instead of memory, for a twin that takes more rows
    than memory should hold (``journey replay``).

    The migrations run once per process, into a template; each call copies it with
    SQLite's backup API, which costs a millisecond instead of an Alembic run. Every
    twin's engine shares the template engine's dialect and one cache of compiled
    statements, so a statement is compiled once per process, not once per twin.
    """
    global _template
    with _template_lock:
        if _template is None:
            connection = sqlite3.connect(":memory:", check_same_thread=False)
            made = make_engine("sqlite://", connection=connection).execution_options(compiled_cache=_COMPILED)
            upgrade(made)
            _template = (connection, made)
        template, base = _template
        copy = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        template.backup(copy)
    sqlite_pragmas(copy)
    # The ignore: sqlite3.Connection is a DB-API connection, but its typeshed stubs do not match SQLAlchemy's DBAPIConnection.
    engine = Engine(StaticPool(lambda: copy, dialect=base.dialect), base.dialect, base.url,  # type: ignore[arg-type]
                    execution_options={"compiled_cache": _COMPILED})
    event.listen(engine, "begin", begin_immediate)
    return engine


def stub_channels() -> dict[str, StubChannel]:
    """A recording stub for every installed channel, requiring what the real adapter requires."""
    from channels import registry

    stubs = {}
    for name in registry.available():
        real = registry.channel_class(name)
        stubs[name] = StubChannel(name, requires=real.requires, requires_content=real.requires_content)
    return stubs


def twin_services(clock: VirtualClock, settings: Settings | None = None, database: str | Path | None = None) -> Services:
    """Services for a twin: in-memory database (or the file ``database``), :class:`TwinBroker`, stub channels, ``clock``."""
    # Rate limits pace sends over seconds of wall time, which a virtual clock skips: the
    # twin applies none (every other setting holds, frequency caps included).
    settings = dataclasses.replace(settings or Settings(), database_url="sqlite://", redis_url=None, broker_url=None, rate_limits={})
    engine = migrated_database(database)
    services = Services(settings, engine, make_sessionmaker(engine), TwinBroker(clock), clock=clock)
    services.adapters.update(stub_channels())
    return services


# -- the twin ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """One thing that happened to a customer, as ``journey simulate --json`` prints it.

    Attributes:
        at: when (virtual time).
        customer: the customer's user id (or anonymous id, or row id).
        journey: the journey's id (None for an event received).
        enrollment: the enrollment's id, if any.
        step: the step that caused it, if any.
        effect: ``event``, ``enter``, ``send``, ``deferred``, ``held``, ``failed``, ``dead``,
            ``retrying``, ``stage``, ``points``, ``no_referrer``, ``referral``, ``exit``.
        detail: the rest: for a delivery ``channel``, ``template``, ``kind``, ``content``
            (rendered parts), ``audience``/``action``, ``url``, ``key``, ``status``,
            ``reason`` (why it was held, deferred or failed); for ``stage`` ``from``, ``to``
            and ``reason``; for ``points`` ``amount``, ``reason``, ``balance``; for ``exit``
            ``status`` and ``reason``.
    """

    at: dt.datetime
    customer: str
    journey: str | None
    enrollment: str | None
    step: str | None
    effect: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> str | None:
        """A delivery's channel."""
        return self.detail.get("channel")

    @property
    def template(self) -> str | None:
        """A delivery's template name."""
        return self.detail.get("template")

    @property
    def kind(self) -> str | None:
        """A delivery's kind: ``marketing`` or ``transactional``."""
        return self.detail.get("kind")

    @property
    def content(self) -> Mapping[str, Any]:
        """A delivery's rendered parts (empty if it was not rendered)."""
        return self.detail.get("content") or {}

    def to_dict(self) -> dict[str, Any]:
        """One JSON object: at, customer, journey, enrollment, step, effect, then the details."""
        return {
            "at": self.at.isoformat(), "customer": self.customer, "journey": self.journey,
            "enrollment": self.enrollment, "step": self.step, "effect": self.effect, **dict(self.detail),
        }


@dataclass(frozen=True)
class Profile:
    """A customer as the database holds it: traits, stage and its history, points, codes."""

    id: str
    traits: dict[str, Any]
    stage: str | None
    timezone: str | None
    points: int
    stage_history: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    referral_codes: dict[str, str]


class Twin:
    """Journeys running on the real pipeline, in memory, on a virtual clock.

    Args:
        journeys: journey files or loaded journeys, deployed at the start (version 1).
        start: where the clock starts (default :data:`DEFAULT_START`).
        settings: the engine's settings (caps, sweep timing); the database and broker
            settings are the twin's own.
        database: a new file for the twin's database instead of memory.
    """

    def __init__(self, journeys: Iterable[Journey | str | Path] = (), *, start: dt.datetime | None = None,
                 settings: Settings | None = None, database: str | Path | None = None) -> None:
        self.clock = VirtualClock(start or DEFAULT_START)
        self.services = twin_services(self.clock, settings, database)
        self.broker: TwinBroker = self.services.broker  # type: ignore[assignment]
        self._messages = itertools.count(1)
        self.deploy(journeys)

    def close(self) -> None:
        """Release the database."""
        self.services.close()

    def __enter__(self) -> Twin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def now(self) -> dt.datetime:
        """The virtual time."""
        return self.clock.current

    @property
    def channels(self) -> dict[str, StubChannel]:
        """The recording stub of each channel: what would have been sent."""
        return self.services.adapters  # type: ignore[return-value]

    # -- driving ------------------------------------------------------------------------------

    def deploy(self, journeys: Iterable[Journey | str | Path]) -> None:
        """Deploy ``journeys`` now, as ``journey deploy`` does; a loaded journey runs as loaded."""
        snapshots = [
            deploy.Snapshot(item, "", {}) if isinstance(item, Journey) else deploy.snapshot(item) for item in journeys
        ]
        if not snapshots:
            return
        with self.services.sessions.begin() as session:
            changes = deploy.deploy(session, snapshots, self.now)
        versions = {c.journey_id: c.to_version for c in changes if c.to_version is not None}
        for snap in snapshots:
            if snap.id in versions:  # the twin has it compiled already: no need to compile the stored copy
                self.services.deployed.add(snap.id, versions[snap.id], snap.journey)
        self.services.deployed.invalidate()

    def set_status(self, journey_id: str, status: str) -> None:
        """Pause (``paused``), resume (``active``) or archive a journey now, as ``journey pause`` and friends do."""
        with self.services.sessions.begin() as session:
            deploy.set_status(session, journey_id, status, self.now)
        self.services.deployed.invalidate()

    def send(self, event: Mapping[str, Any]) -> None:
        """Take one Segment event at its ``timestamp`` (now, if it has none; never in the past).

        What falls due before it goes first; what falls due at the same instant, after it.

        Raises:
            ValueError: the event is not a valid Segment message (the problems are named).
        """
        data, at = self._message(event)
        self.advance_to(at, inclusive=False)
        self.clock.current = at
        rows = self._prepare(data, at)
        with self.services.sessions.begin() as session:
            ids = ingest.store(session, rows)
        self.services.enqueue_events(ids)
        self.settle()

    def send_many(self, events: Iterable[Mapping[str, Any]], *, span: dt.timedelta = BATCH_SPAN,
                  size: int = BATCH_SIZE) -> list[tuple[Mapping[str, Any], str]]:
        """Take time-ordered Segment events in batches, as workers take a queue message of many; return the refused.

        A batch is the events up to the next moment the scheduler or the queues have
        work (an event at that very moment goes in: events go before timers), at most
        ``span`` after its first event and ``size`` events. Its events are stored in one
        transaction and applied through the workers' batch path
        (:func:`engine.workers.actors.apply_events`), each at its own instant; then the
        clock moves to the batch's last event and what they caused runs (sends, timers
        due at once). So a send an event causes goes out at most ``span`` late, and a
        timer it schedules less than ``span`` ahead may fire that late too: the price of
        not committing once per event. :meth:`send` takes one event exactly.

        Returns:
            The events that are not valid Segment messages, each with the problems named;
            the others are taken.
        """
        refused: list[tuple[Mapping[str, Any], str]] = []
        rows: list[dict[str, Any]] = []
        limit: dt.datetime | None = None
        last = self.now
        for message in events:
            data, at = self._message(message)
            if rows and (len(rows) >= size or (limit is not None and at > limit)):
                self._apply(rows, last)
                rows = []
            if not rows:
                due = _earliest(next_due(self.services), self.broker.next_delayed())
                if due is not None and due < at:  # else nothing to carry out first: no need to ask again
                    self.advance_to(at, inclusive=False)
                    due = _earliest(next_due(self.services), self.broker.next_delayed())
                self.clock.current = at
                limit = _earliest(due, at + span)
            try:
                rows += self._prepare(data, at)
            except ValueError as exc:
                refused.append((message, str(exc)))
                continue
            last = at
        if rows:
            self._apply(rows, last)
        return refused

    def _apply(self, rows: list[dict[str, Any]], last: dt.datetime) -> None:
        """Store ``rows`` together, apply them at the clock's instant or later, then run what they caused at ``last``."""
        with self.services.sessions.begin() as session:
            ids = ingest.store(session, rows)
        self.services.enqueue_events(ids)
        self.broker.drain(only=EVENTS_QUEUE)
        self.clock.current = max(self.clock.current, last)
        self.settle()

    def _message(self, event: Mapping[str, Any]) -> tuple[dict[str, Any], dt.datetime]:
        """``event`` with a type, a messageId and a text timestamp, and the instant it is taken at."""
        data = dict(event)
        data.setdefault("type", "track")
        data.setdefault("messageId", f"{SOURCE}-{next(self._messages)}")
        at = self.now
        if data.get("timestamp") is not None:
            at = max(at, _moment(data["timestamp"]))
            if isinstance(data["timestamp"], dt.datetime):  # the wire format is text
                data["timestamp"] = data["timestamp"].isoformat()
        data.setdefault("timestamp", at.isoformat())
        return data, at

    def _prepare(self, data: dict[str, Any], at: dt.datetime) -> list[dict[str, Any]]:
        rows, outcome = ingest.prepare(data, source=SOURCE, received_at=at, type_=data["type"])
        if outcome.rejected:
            problems = "; ".join(str(p) for _, found in outcome.rejected for p in found)
            raise ValueError(f"event {data['messageId']!r} is not a valid Segment message: {problems}")
        return rows

    def run(self, events: Iterable[Mapping[str, Any]], *, until: dt.timedelta | None = None) -> None:
        """Take ``events`` in time order, then run ``until`` past the last one.

        Without ``until``, run until nothing is due, at most :data:`DEFAULT_HORIZON` on.
        """
        for item in sorted(events, key=lambda e: _moment(e["timestamp"]) if e.get("timestamp") else self.now):
            self.send(item)
        self.finish(until)

    def finish(self, until: dt.timedelta | None = None) -> None:
        """Run ``until`` past now; without it, until nothing is due, at most :data:`DEFAULT_HORIZON` on."""
        if until is not None:
            self.advance_to(self.now + until)
        else:
            self.advance_to(self.now + DEFAULT_HORIZON, stop_early=True)

    def advance(self, delta: dt.timedelta) -> None:
        """Let ``delta`` pass, carrying out everything due on the way, in order."""
        self.advance_to(self.now + delta)

    def advance_to(self, moment: dt.datetime, *, inclusive: bool = True, stop_early: bool = False) -> None:
        """Move the clock to ``moment``, carrying out what falls due before it (and at it, if ``inclusive``).

        ``stop_early``: leave the clock where the last work was done.
        """
        fast_forward(self.services, self.clock, moment, self.settle, inclusive=inclusive,
                     also=self.broker.next_delayed)
        if not stop_early:
            self.clock.current = max(self.clock.current, moment)

    def settle(self) -> None:
        """Run every queue message due now, and what it causes, until none is left."""
        self.broker.drain()

    def seed_customer(self, user_id: str, *, stage: str | None = None, points: int = 0) -> None:
        """Create a customer with a stage and points as they stood before the twin started."""
        with self.services.sessions.begin() as session:
            customer = profiles.resolve(UnitOfWork(session), user_id, None, self.now)
            if stage is not None:
                profiles.set_stage(session, customer, stage, self.now, "as the twin started")
            if points:
                session.add(PointsEntry(customer_id=customer.id, amount=points, reason="opening balance", at=self.now))

    # -- reading ------------------------------------------------------------------------------

    def read(self, query: Callable[..., _T], *args: Any) -> _T:
        """Run one of this module's query functions in a session: ``twin.read(deliveries, "ada")``."""
        with self.services.sessions() as session:
            return query(session, *args)

    def profile(self, ident: str) -> Profile | None:
        """The customer known by ``ident`` (user id or anonymous id), or None."""
        return self.read(profile, ident)

    def effects(self, ident: str | None = None) -> list[Effect]:
        """Everything that happened, to one customer or to all, in order."""
        return self.read(effects, ident)

    def customers(self) -> list[str]:
        """Every customer, in the order they were first seen."""
        return self.read(customers)


# -- queries: the outputs are the rows -------------------------------------------------------------


def customers(session: Session) -> list[str]:
    """The live customers' names (user id, else anonymous id), first seen first."""
    rows = session.execute(
        select(Customer).where(Customer.merged_into_id.is_(None)).order_by(Customer.first_seen_at, Customer.id)
    ).scalars()
    return [_name(session, c) for c in rows]


def customer_ids(session: Session, ident: str) -> list[int]:
    """The row ids of the customer known by ``ident`` and of the profiles merged into it."""
    customer = profiles.find(session, ident)
    if customer is None:
        return []
    ids, frontier = [customer.id], [customer.id]
    while frontier:
        frontier = list(session.execute(select(Customer.id).where(Customer.merged_into_id.in_(frontier))).scalars())
        ids += frontier
    return ids


def enrollments(session: Session, ident: str, journey_id: str | None = None) -> list[EnrollmentState]:
    """The customer's enrollments as the runtime sees them, oldest first."""
    query = select(Enrollment).where(Enrollment.customer_id.in_(customer_ids(session, ident)))
    if journey_id is not None:
        query = query.where(Enrollment.journey_id == journey_id)
    rows = session.execute(query.order_by(Enrollment.started_at, Enrollment.id)).scalars()
    return [EnrollmentState.from_dict(row.state) for row in rows]


def trace(session: Session, enrollment_id: str) -> list[Trace]:
    """An enrollment's trace rows, in order, as runtime :class:`~engine.runtime.Trace` entries."""
    rows = session.execute(
        select(TraceEntry).where(TraceEntry.enrollment_id == enrollment_id).order_by(TraceEntry.at, TraceEntry.id)
    ).scalars()
    return [Trace(r.step, r.what, r.detail or "", r.value, r.error) for r in rows]


def turn_aways(session: Session, ident: str) -> list[dict[str, Any]]:
    """The latest times a journey turned the customer away, oldest first (as ``journey trace`` shows them)."""
    return explain_turn_aways(session, customer_ids(session, ident))


def deliveries(session: Session, ident: str | None = None) -> list[Delivery]:
    """The deliveries (of one customer, or all), in the order they were created."""
    query = select(Delivery)
    if ident is not None:
        query = query.where(Delivery.customer_id.in_(customer_ids(session, ident)))
    return list(session.execute(query.order_by(Delivery.created_at, Delivery.id)).scalars())


def delivery_effect(delivery: Delivery, customer: str, at: dt.datetime, effect: str = "send",
                    reason: str | None = None) -> Effect:
    """A delivery as an :class:`Effect`: what it would send, and how it went."""
    detail: dict[str, Any] = {
        "channel": delivery.channel, "template": delivery.template, "kind": delivery.kind,
        "content": dict(delivery.rendered or {}), "status": delivery.status, "key": delivery.key,
    }
    for name in ("audience", "action", "url"):
        if delivery.content.get(name):
            detail[name] = delivery.content[name]
    if reason:
        detail["reason"] = reason
    return Effect(at, customer, delivery.journey_id, delivery.enrollment_id, delivery.step, effect, detail)


def stage_changes(session: Session, ident: str) -> list[dict[str, Any]]:
    """The customer's stage history, oldest first."""
    rows = session.execute(
        select(StageChange).where(StageChange.customer_id.in_(customer_ids(session, ident)))
        .order_by(StageChange.at, StageChange.id)
    ).scalars()
    return [{"at": _aware(r.at), "from": r.from_stage, "to": r.to_stage, "reason": r.reason} for r in rows]


def ledger(session: Session, ident: str) -> list[dict[str, Any]]:
    """The customer's points ledger, oldest first."""
    rows = session.execute(
        select(PointsEntry).where(PointsEntry.customer_id.in_(customer_ids(session, ident)))
        .order_by(PointsEntry.at, PointsEntry.id)
    ).scalars()
    return [{"at": _aware(r.at), "amount": r.amount, "reason": r.reason, "key": r.key} for r in rows]


def referral_codes(session: Session, ident: str) -> dict[str, str]:
    """The customer's referral codes, by program."""
    rows = session.execute(
        select(ReferralCode.program, ReferralCode.code).where(ReferralCode.customer_id.in_(customer_ids(session, ident)))
    ).all()
    return {program: code for program, code in rows}


def referrals(session: Session) -> list[dict[str, Any]]:
    """Who referred whom, with the code, in the order they happened."""
    rows = session.execute(select(Referral).order_by(Referral.at)).scalars().all()
    names = {c.id: _name(session, c) for c in session.execute(
        select(Customer).where(Customer.id.in_({r.referrer_id for r in rows} | {r.referred_id for r in rows}))).scalars()}
    return [{"at": _aware(r.at), "referrer": names.get(r.referrer_id), "referred": names.get(r.referred_id),
             "code": r.code, "converted_at": _aware(r.converted_at)} for r in rows]


def profile(session: Session, ident: str) -> Profile | None:
    """The customer known by ``ident``, as a :class:`Profile`; None if nobody is."""
    customer = profiles.find(session, ident)
    if customer is None:
        return None
    entries = ledger(session, ident)
    return Profile(
        id=_name(session, customer), traits=dict(customer.traits or {}), stage=customer.stage,
        timezone=customer.timezone, points=sum(e["amount"] for e in entries),
        stage_history=stage_changes(session, ident), ledger=entries, referral_codes=referral_codes(session, ident),
    )


def effects(session: Session, ident: str | None = None) -> list[Effect]:
    """What happened (to the customer known by ``ident``, or to everyone), in order.

    Built from the rows: events received, enrollments entered and ended, every delivery
    outcome the deliverer traced (sent, deferred, held, failed...), stage changes, points
    and referral codes.
    """
    names = {c.id: c for c in session.execute(select(Customer)).scalars()}
    live = {cid: _live(names, cid) for cid in names}
    wanted = set(customer_ids(session, ident)) if ident is not None else set(names)
    label = {cid: _name(session, names[live[cid]]) for cid in wanted}
    items: list[tuple[dt.datetime, int, int, Effect]] = []

    def add(at: Any, rank: int, order: int, effect: Effect) -> None:
        items.append((_aware(at), rank, order, effect))

    for e in session.execute(select(Event).where(Event.customer_id.in_(wanted)).order_by(Event.id)).scalars():
        assert e.customer_id is not None  # selected by it
        data = e.traits if e.type == "identify" else e.properties
        add(e.received_at, 0, e.id, Effect(_aware(e.received_at), label[e.customer_id], None, None, None, "event",
                                           {"event": e.event or e.name or e.type, "type": e.type, "data": dict(data or {})}))
    rows = list(session.execute(select(Enrollment).where(Enrollment.customer_id.in_(wanted))).scalars())
    triggers = dict(session.execute(
        select(Event.id, Event.event).where(Event.id.in_({r.trigger_event_id for r in rows if r.trigger_event_id}))).all())
    by_id = {r.id: r for r in rows}
    for r in rows:
        who = label[r.customer_id]
        add(r.started_at, 1, 0, Effect(_aware(r.started_at), who, r.journey_id, r.id, None, "enter",
                                       {"trigger": (triggers.get(r.trigger_event_id) if r.trigger_event_id else None) or "segment"}))
        if r.ended_at is not None:
            state = r.state or {}
            add(r.ended_at, 9, 0, Effect(_aware(r.ended_at), who, r.journey_id, r.id, state.get("step"), "exit",
                                         {"status": r.status, "reason": state.get("reason")}))
    sent = {d.id: d for d in session.execute(select(Delivery).where(Delivery.customer_id.in_(wanted))).scalars()}
    for t in session.execute(
        select(TraceEntry).where(TraceEntry.enrollment_id.in_(list(by_id)),
                                 TraceEntry.what.like("delivery %") | (TraceEntry.what == "no referrer"))
        .order_by(TraceEntry.id)
    ).scalars():
        row = by_id[t.enrollment_id]
        if t.what == "no referrer":
            add(t.at, 5, t.id, Effect(_aware(t.at), label[row.customer_id], row.journey_id, row.id, t.step,
                                      "no_referrer", {"reason": t.detail, **dict(t.value or {})}))
            continue
        delivery_id = (t.value or {}).get("delivery")
        delivery = sent.get(delivery_id) if isinstance(delivery_id, int) else None
        if delivery is None:
            continue
        what = t.what.removeprefix("delivery ")
        add(t.at, 4, t.id, delivery_effect(delivery, label[row.customer_id], _aware(t.at),
                                           "send" if what == "sent" else what.replace(" ", "_"), t.error))
    for change in session.execute(select(StageChange).where(StageChange.customer_id.in_(wanted))).scalars():
        add(change.at, 3, change.id, Effect(_aware(change.at), label[change.customer_id], None, None, None, "stage",
                                            {"from": change.from_stage, "to": change.to_stage, "reason": change.reason}))
    balance: dict[int, int] = {}
    for entry in session.execute(
        select(PointsEntry).where(PointsEntry.customer_id.in_(wanted)).order_by(PointsEntry.at, PointsEntry.id)
    ).scalars():
        target = live[entry.customer_id]
        balance[target] = balance.get(target, 0) + entry.amount
        add(entry.at, 5, entry.id, Effect(_aware(entry.at), label[entry.customer_id], None, None, None, "points",
                                          {"amount": entry.amount, "reason": entry.reason, "balance": balance[target]}))
    for code in session.execute(select(ReferralCode).where(ReferralCode.customer_id.in_(wanted))).scalars():
        add(code.created_at, 6, 0, Effect(_aware(code.created_at), label[code.customer_id], None, None, None,
                                          "referral", {"code": code.code, "program": code.program}))
    # By the second, then by kind: the deliverer's clock moves on by the time a send
    # takes (microseconds here), and what a step caused still reads before the exit.
    items.sort(key=lambda item: (item[0].replace(microsecond=0), *item[1:3]))
    return [effect for *_, effect in items]


def _live(customers_by_id: Mapping[int, Customer], customer_id: int) -> int:
    while customers_by_id[customer_id].merged_into_id is not None:
        customer_id = customers_by_id[customer_id].merged_into_id  # type: ignore[assignment]
    return customer_id


def _name(session: Session, customer: Customer) -> str:
    return profiles.public_id(session, customer)[0]


def _moment(value: Any) -> dt.datetime:
    """An event's timestamp, parsed as ingestion parses it."""
    return value if isinstance(value, dt.datetime) else parse_time(value)


def _earliest(*moments: dt.datetime | None) -> dt.datetime | None:
    return min((m for m in moments if m is not None), default=None)


@overload
def _aware(value: None) -> None: ...


@overload
def _aware(value: dt.datetime | str) -> dt.datetime: ...


def _aware(value: dt.datetime | str | None) -> dt.datetime | None:
    if isinstance(value, str):  # SQLite aggregates lose the column's type
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


__all__ = [
    "DEFAULT_HORIZON", "DEFAULT_START", "Effect", "Profile", "Twin", "TwinBroker", "TwinStuck", "VirtualClock",
    "customer_ids", "customers", "deliveries", "delivery_effect", "due_work", "effects", "enrollments", "fast_forward",
    "fire_and_release", "ledger", "migrated_database", "next_due", "profile", "referral_codes", "referrals",
    "stage_changes", "stub_channels", "trace", "twin_services",
]

