"""Where the pure runtime meets the database: events and timers in, rows and messages out.

For one event (or one timer) everything it causes — enrollment states, new timers,
deliveries (an outbox), profile effects and the trace — is written in the caller's
transaction, through the :class:`~engine.unit_of_work.UnitOfWork` the caller passes
(:meth:`Orchestrator.begin`, then ``on_event`` or ``on_timers``, then
:meth:`Orchestrator.finish`; a single event is a unit of one); the queue messages for
new deliveries and due timers are returned by ``finish`` as :class:`Followups` to send
after the commit. Every effect row is keyed by the runtime's
idempotency key under a unique constraint, so doing the same work twice adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson

from sqlalchemy import delete, func, or_, select, true
from sqlalchemy.orm import Session

from engine import counters, profiles
from engine.definitions import Journey, WaitUntilStep
from engine.deployed import DeployedJourneys
from engine.runtime import commands as cmd
from engine.runtime.entry import PAUSED, TriggerIndex, refusal, route
from engine.runtime.inputs import EventArrived, TimerFired
from engine.runtime.commands import Trace
from engine.runtime.machine import StepOutcome, advance, converted_after_end, start, stop
from engine.runtime.state import EnrollmentState
from engine.storage.models import (
    AnonymousId,
    AppliedEffect,
    Customer,
    JourneyRecord,
    Delivery,
    Enrollment,
    Event,
    NotEnteredCount,
    PointsEntry,
    Referral,
    ReferralCode,
    Timer,
    TraceEntry,
    TurnAway,
)
from engine.storage.upsert import add_counts, insert_ignore, insert_rows
from engine.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# After this many failed attempts an event is left for an operator (it keeps its error),
# and timers stop waiting for it (waits_for_earlier_events).
MAX_EVENT_ATTEMPTS = 5
# Commands that change what the runtime sees of the customer.
PROFILE_COMMANDS = frozenset({"update_profile", "set_stage", "award_points", "issue_referral"})
# The reason an enrollment ends with when a profile merge left its customer in its journey once too often.
MERGED = "merged"
# A timer due this soon is enqueued right after the commit instead of waiting for the
# scheduler's next tick.
IMMEDIATE = timedelta(seconds=1)
# The latest turn-aways kept per customer for ``journey trace`` (older ones are deleted;
# the per-journey counts in ``not_entered_counts`` keep every one).
TURN_AWAYS_KEPT = 20


@dataclass
class Followups:
    """Queue messages to send once the transaction that wrote their rows has committed."""

    deliveries: list[tuple[int, str]] = field(default_factory=list)  # (delivery id, channel)
    timers: list[str] = field(default_factory=list)  # timer keys due now

    def extend(self, other: Followups) -> None:
        self.deliveries += other.deliveries
        self.timers += other.timers


def segment_event(event: Event) -> dict[str, Any]:
    """The event as conditions and templates see it (Segment's shape)."""
    return {
        "type": event.type,
        "event": event.event or event.name or event.type,
        "name": event.name,
        "userId": event.user_id,
        "anonymousId": event.anonymous_id,
        "messageId": event.message_id,
        "properties": event.properties or {},
        "traits": event.traits or {},
        "context": event.context or {},
        "timestamp": event.timestamp.isoformat(),
        "receivedAt": event.received_at.isoformat(),
    }


def customer_view(unit: UnitOfWork, customer: Customer) -> dict[str, Any]:
    """The customer as the runtime takes it: id, traits, stage, points, time zone."""
    return customer_views(unit, [customer])[customer.id]


def customer_views(unit: UnitOfWork, customers: Sequence[Customer]) -> dict[int, dict[str, Any]]:
    """:func:`customer_view` of each customer, by id, with one query for all their points (none if loaded)."""
    if all(c.id in unit.points for c in customers):
        points = unit.points
    else:
        points = _points(unit.session, [c.id for c in customers])
    return {
        customer.id: {
            "id": customer.external_id or str(customer.id),
            "traits": dict(customer.traits or {}),
            "stage": customer.stage,
            "points": int(points.get(customer.id) or 0),
            "timezone": customer.timezone,
        }
        for customer in customers
    }


def _points(session: Session, customer_ids: Sequence[int]) -> dict[int, int]:
    sums = session.execute(
        select(PointsEntry.customer_id, func.sum(PointsEntry.amount))
        .where(PointsEntry.customer_id.in_(customer_ids))
        .group_by(PointsEntry.customer_id)
    ).all()
    found = {customer_id: int(total or 0) for customer_id, total in sums}
    return {customer_id: found.get(customer_id, 0) for customer_id in customer_ids}


class Orchestrator:
    """Runs deployed journeys for events and timers, persisting what the runtime decides."""

    def __init__(self, deployed: DeployedJourneys) -> None:
        self.deployed = deployed
        self._index_stamp: object = None
        self._index = TriggerIndex()
        self._paused = TriggerIndex()  # paused journeys: their triggers only turn customers away
        self._watched: set[str] = set()
        self._goals: dict[str, dict[str, timedelta]] = {}

    # -- units of work ------------------------------------------------------------------

    def begin(self, unit: UnitOfWork, events: Sequence[Event], customers: Sequence[Customer]) -> None:
        """Load into ``unit`` what ``events`` of ``customers`` will read, in a few queries.

        Active enrollments are locked, as :meth:`on_event` alone would lock them. Then
        call :meth:`on_event` for each event (or :meth:`on_timers`), and :meth:`finish`
        once, before the commit: the rows they cause are written there. Timers begin
        with no events and no customers.
        """
        session = unit.session
        self._refresh_index(session)
        unit.customers = {c.id: c for c in customers}
        ids = [c.id for c in customers]
        if ids:
            unit.points = _points(session, ids)
            names = {e.event or e.name or e.type for e in events}
            triggered = {j.id for name in names for j in self._index.triggered_by(name)}
            if self._index.segments and any(e.type == "identify" for e in events):
                triggered |= {j.id for j in self._index.segments}
            if triggered:
                for customer_id in ids:
                    for journey_id in triggered:
                        unit.history[(customer_id, journey_id)] = []
                candidates = {f"{journey_id}:{event.id}" for event in events for journey_id in triggered}
                for row in _entry_history(session, ids, triggered, candidates):
                    unit.history[(row.customer_id, row.journey_id)].append(row)
            if names & self._watched:
                unit.active = {customer_id: [] for customer_id in ids}
                for row in _lock_active(session, ids):
                    unit.active[row.customer_id].append(row)
                _load_applied(unit, [row.id for rows in unit.active.values() for row in rows])

    def finish(self, unit: UnitOfWork) -> Followups:
        """Write the rows ``unit`` held back; return the messages to send after the commit."""
        session = unit.session
        followups = Followups()
        session.flush()  # enrollments first: the rows below refer to them
        insert_rows(session, AppliedEffect, unit.effects, ["key"])
        inserted = insert_rows(session, Delivery, unit.deliveries, ["key"], ["id", "channel"])
        followups.deliveries += [(delivery_id, channel) for delivery_id, channel in inserted]
        timers = list(unit.timers.values())
        due = {row["key"] for row in timers if row["enqueued_at"] is not None}
        followups.timers += [key for (key,) in insert_rows(session, Timer, timers, ["key"], ["key"]) if key in due]
        insert_rows(session, TraceEntry, unit.trace)
        counters.write(session, unit.counts)
        _write_turn_aways(session, unit.turn_aways)
        unit.effects, unit.deliveries, unit.timers, unit.trace = [], [], {}, []  # written: a second finish adds nothing
        unit.turn_aways, unit.counts = [], counters.Tally()
        return followups

    # -- events -------------------------------------------------------------------------

    def on_event(self, unit: UnitOfWork, event: Event, customer: Customer, now: datetime,
                 traits_before: dict[str, Any] | None = None) -> None:
        """Apply an event: resume, convert or exit active enrollments, then enroll.

        Routing is the runtime's (:func:`engine.runtime.entry.route`): the enrollments the
        event concerns (goal, exit, ``wait_until``) see it before triggers do, so an
        ``order_completed`` converts a running journey before it could start another.
        ``traits_before`` are the traits before an ``identify`` changed them: a segment
        trigger enrolls when its condition starts to hold. What it causes is written by
        :meth:`finish`.
        """
        session = unit.session
        self._refresh_index(session)
        name = event.event or event.name or event.type
        if _may_have_merged(unit, event, customer):
            self._after_merge(unit, customer, now)
        data = segment_event(event)
        if name in self._goals and event.type == "track":
            self._convert_ended(unit, event, data, customer, self._goals[name], now)
        concerned = name in self._watched
        paused = self._paused.triggered_by(name) or (event.type == "identify" and self._paused.segments)
        if (not concerned and not self._index.triggered_by(name) and not paused
                and not (event.type == "identify" and self._index.segments)):
            return  # no running journey cares: the common case costs nothing more
        view = customer_view(unit, customer)
        if not concerned:
            rows = {}
        elif customer.id in unit.active:
            rows = {row.id: row for row in unit.active[customer.id] if row.status == "active"}
        else:
            rows = {row.id: row for row in self._active(session, customer.id)}
        active = []
        for row in rows.values():
            if self._is_running(row.journey_id, session):
                active.append((EnrollmentState.from_dict(row.state), self.deployed.get(row.journey_id, row.version, session)))
        before = {**view, "traits": traits_before} if traits_before is not None else None
        stale = False  # the effects of a step may have changed the profile
        for step in route(self._index, data, view, active, now, before=before):
            if stale:
                view, stale = customer_view(unit, customer), False
            if step.action == "turn_away":
                self._turn_away(unit, event, customer, step.journey, now, step.why, step.detail, step.value)
                continue
            if step.action == "advance" and step.enrollment is not None:
                row = rows[step.enrollment.id]
                outcome = advance(step.journey, EnrollmentState.from_dict(row.state), EventArrived(data), view, now)
                self._persist(unit, row, step.journey, outcome, customer, now)
            else:
                enrollment_id = f"{step.journey.id}:{event.id}"
                history = self._history(unit, customer.id, step.journey.id, enrollment_id)
                if any(r.id == enrollment_id for r in history):
                    continue  # this event already enrolled them (it is being processed again)
                refused = refusal(step.journey, [EnrollmentState.from_dict(r.state) for r in history], now)
                if refused is not None:
                    self._turn_away(unit, event, customer, step.journey, now, *refused)
                    continue
                outcome = start(step.journey, enrollment_id, view, data, now)
                row = Enrollment(
                    id=enrollment_id, journey_id=step.journey.id,
                    version=self.deployed.running(session).versions[step.journey.id], customer_id=customer.id,
                    status="active", state={}, trigger_event_id=event.id, started_at=now, updated_at=now,
                )
                session.add(row)
                history.append(row)
                if customer.id in unit.active:
                    unit.active[customer.id].append(row)
                self._persist(unit, row, step.journey, outcome, customer, now, step.trace)
            stale = stale or any(c.type in PROFILE_COMMANDS for c in outcome.commands)
        if paused:
            # A paused journey enrolls nobody: those its trigger (and condition) let in are turned away.
            view = customer_view(unit, customer) if stale else view
            for step in route(self._paused, data, view, [], now, before=before):
                if step.action == "turn_away":
                    self._turn_away(unit, event, customer, step.journey, now, step.why, step.detail, step.value)
                else:
                    self._turn_away(unit, event, customer, step.journey, now, PAUSED, f"{step.journey.id} is paused")

    def _turn_away(self, unit: UnitOfWork, event: Event, customer: Customer, journey: Journey, now: datetime,
                   reason: str, detail: str, value: dict[str, Any] | None = None) -> None:
        """Hold back the record that ``journey`` turned ``customer`` away from ``event`` (written by :meth:`finish`)."""
        unit.turn_aways.append({
            "key": f"{journey.id}:{event.id}"[:255], "customer_id": customer.id, "journey_id": journey.id,
            "version": self.deployed.running(unit.session).versions.get(journey.id, 0), "at": now,
            "event": (event.event or event.name or event.type)[:255], "reason": reason,
            "detail": detail[:1000] or None, "value": value,
        })

    def _after_merge(self, unit: UnitOfWork, customer: Customer, now: datetime) -> None:
        """After a merge (:func:`engine.profiles.merge`): the customer stays in each journey
        as often as its entry rules allow (``entry.concurrent``), in the oldest enrollments;
        the others exit as ``merged`` (docs/runtime.md, "Merges")."""
        session = unit.session
        rows = _lock_active(session, [customer.id])  # oldest first
        # What begin() read under the merged-away profile is the customer's now.
        if customer.id in unit.active:
            unit.active[customer.id] = list(rows)
        for key in [key for key in unit.history if key[0] == customer.id]:
            del unit.history[key]
        unit.points.pop(customer.id, None)
        by_journey: dict[str, list[Enrollment]] = {}
        for row in rows:
            by_journey.setdefault(row.journey_id, []).append(row)
        for journey_id, active in by_journey.items():
            allowed = max(1, self.deployed.get(journey_id, active[0].version, session).entry.concurrent)
            kept, extra = active[:allowed], active[allowed:]
            if not extra:
                continue
            keep = {audience for row in kept for audience in (EnrollmentState.from_dict(row.state).audiences or {})}
            who = profiles.describe(session, customer)
            view = customer_view(unit, customer)
            for row in extra:
                journey = self.deployed.get(journey_id, row.version, session)
                outcome = stop(journey, EnrollmentState.from_dict(row.state), view, now, MERGED, keep_audiences=keep)
                note = Trace(row.step, "merged", f"profile merged into {who}, in {journey_id} already "
                             f"(enrollment {kept[0].id}); this one ends", kept[0].id)
                self._persist(unit, row, journey, outcome, customer, now, (note,))

    # -- timers -------------------------------------------------------------------------

    def on_timer(self, unit: UnitOfWork, key: str, now: datetime) -> None:
        """Fire timer ``key`` once; a fired, cancelled or unknown timer changes nothing."""
        self.on_timers(unit, [key], now)

    def on_timers(self, unit: UnitOfWork, keys: Collection[str], now: datetime) -> None:
        """Fire the timers ``keys`` once each; fired, cancelled or unknown ones change nothing.

        Locks in the engine's one order (docs/operations.md, "Locks"), as the event path
        does: the timers' customers by id, then their enrollments by id, then the timers
        by key. Locking the enrollment first and writing the customer (traits, stage)
        later deadlocked with an event of the same customer, which holds it the other way.

        A timer whose customer has an event stored and not applied yet that the timer's
        enrollment waits for, stamped at or before the timer's due time, is held back
        (:func:`waits_for_earlier_events`): it is left for the scheduler's next tick, so
        the event counts first, as the runtime's ordering rule says. What they cause is
        written by :meth:`finish`.
        """
        session = unit.session
        keys = sorted(set(keys))
        # Who owns the timers, read without locks: a timer never changes enrollment, nor
        # an enrollment customer, so the locks can then be taken in order.
        owners = session.execute(
            select(Enrollment.id, Enrollment.customer_id)
            .join(Timer, Timer.enrollment_id == Enrollment.id)
            .where(Timer.key.in_(keys), Timer.fired_at.is_(None))
        ).all()
        if not owners:
            return
        customers = {c.id: c for c in profiles.lock_customers(session, {customer for _, customer in owners})}
        rows = {
            row.id: row
            for row in session.execute(
                select(Enrollment)
                .where(Enrollment.id.in_({enrollment for enrollment, _ in owners}))
                .order_by(Enrollment.id)
                .with_for_update(key_share=True)
            ).scalars()
        }
        timers = session.execute(
            select(Timer)
            .where(Timer.key.in_(keys), Timer.fired_at.is_(None), Timer.enrollment_id.in_(list(rows)))
            .order_by(Timer.key)
            .with_for_update(key_share=True)
        ).scalars()
        _load_applied(unit, list(rows))
        unit.points.update(_points(session, list(customers)))
        due: list[tuple[Timer, Enrollment, Journey]] = []
        for timer in timers:
            row = rows[timer.enrollment_id]
            if row.status != "active":
                timer.fired_at = now
            elif self._is_running(row.journey_id, session):  # paused: stays claimed; the resume releases it
                due.append((timer, row, self.deployed.get(row.journey_id, row.version, session)))
        held = waits_for_earlier_events(session, [(t, customers[r.customer_id], _events_of(j)) for t, r, j in due])
        for timer, row, journey in due:
            if timer.key in held:
                timer.enqueued_at = None  # the scheduler enqueues it again on its next tick
                continue
            timer.fired_at = now
            customer = customers[row.customer_id]
            outcome = advance(journey, EnrollmentState.from_dict(row.state), TimerFired(timer.key),
                              customer_view(unit, customer), now)
            self._persist(unit, row, journey, outcome, customer, now)

    # -- persistence --------------------------------------------------------------------

    def _persist(self, unit: UnitOfWork, row: Enrollment, journey: Journey, outcome: StepOutcome,
                 customer: Customer, now: datetime, extra_trace: tuple[Any, ...] = ()) -> None:
        state = outcome.state
        row.state = state.to_dict()
        row.status = state.status
        row.step = state.step
        row.waiting_event = state.wait.event if state.wait is not None and state.wait.kind == "event" else None
        row.updated_at = now
        row.ended_at = state.ended_at
        for command in outcome.commands:
            handler = getattr(self, f"_do_{command.type}")
            handler(unit, row, journey, command, customer, now)
        self._record(unit, row, journey, (*extra_trace, *outcome.trace), state.variant, now)

    @staticmethod
    def _record(unit: UnitOfWork, row: Enrollment, journey: Journey, entries: Sequence[Trace],
                variants: Mapping[str, str], now: datetime) -> None:
        """Hold back ``entries`` for the trace of ``row`` and count them for journey stats (both written by finish())."""
        for entry in entries:
            values = {
                "enrollment_id": row.id, "at": now, "step": entry.step, "what": entry.what,
                "detail": (entry.detail or "")[:1000] or None, "value": entry.value,
                "error": (entry.error or "")[:1000] or None,
            }
            unit.trace.append(values)
        counters.tally(unit.counts, journey, row, entries, variants)

    def _convert_ended(self, unit: UnitOfWork, event: Event, data: dict[str, Any], customer: Customer,
                       journeys: Mapping[str, timedelta], now: datetime) -> None:
        """The customer reached the goal of ``journeys`` (with their longest conversion windows):
        their enrollments there that ended without converting (a holdout's) convert when it came
        within the goal's window (:func:`converted_after_end`)."""
        session = unit.session
        at = event.timestamp or now
        rows = session.execute(
            select(Enrollment)
            .where(Enrollment.customer_id == customer.id, Enrollment.journey_id.in_(sorted(journeys)),
                   Enrollment.status.not_in(("active", "converted")), Enrollment.converted_at.is_(None),
                   Enrollment.started_at >= at - max(journeys.values()), Enrollment.started_at <= at)
            .order_by(Enrollment.id)
        ).scalars().all()
        if not rows:
            return
        view = customer_view(unit, customer)
        for row in rows:
            journey = self.deployed.get(row.journey_id, row.version, session)
            state = EnrollmentState.from_dict(row.state)
            converted = converted_after_end(journey, state, data, view, now)
            if converted is not None:
                row.converted_at = now
                self._record(unit, row, journey, (converted,), state.variant, now)

    def _do_send(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.Send,
                 customer: Customer, now: datetime) -> None:
        values = {
            "key": command.key, "enrollment_id": row.id, "customer_id": customer.id,
            "journey_id": row.journey_id, "version": row.version, "step": command.step,
            "channel": command.channel, "template": command.template, "kind": command.kind,
            "topic": command.topic, "content": dict(command.content),
            "variables": _jsonable(command.variables), "status": "pending", "attempts": 0,
            "created_at": now, "enqueued_at": now, "updated_at": now,
        }
        unit.deliveries.append(values)  # inserted by finish()

    def _do_schedule_timer(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.ScheduleTimer,
                           customer: Customer, now: datetime) -> None:
        due_now = command.at <= now + IMMEDIATE
        values = {"key": command.key, "enrollment_id": row.id, "due_at": command.at, "enqueued_at": now if due_now else None}
        unit.timers[command.key] = values  # inserted by finish()

    def _do_cancel_timer(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.CancelTimer,
                         customer: Customer, now: datetime) -> None:
        if unit.timers.pop(command.key, None) is not None:
            return  # scheduled in this unit of work: never written
        timer = unit.session.get(Timer, command.key)
        if timer is not None and timer.fired_at is None:
            timer.fired_at = now  # cancelled: it will never fire

    def _do_update_profile(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.UpdateProfile,
                           customer: Customer, now: datetime) -> None:
        if _first_time(unit, command, row, now):
            profiles.merge_traits(customer, dict(command.traits))

    def _do_set_stage(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.SetStage,
                      customer: Customer, now: datetime) -> None:
        if _first_time(unit, command, row, now):
            profiles.set_stage(unit.session, customer, command.stage, now, command.reason)

    def _do_award_points(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.AwardPoints,
                         customer: Customer, now: datetime) -> None:
        session = unit.session
        owner = customer.id
        if command.to == "referrer":
            referrer = _referrer(session, customer, command.referral_code, now)
            if referrer is None:
                session.add(TraceEntry(enrollment_id=row.id, at=now, step=command.step, what="no referrer",
                                       detail="no known referral code; nobody was awarded points",
                                       value={"referral_code": command.referral_code}))
                return
            owner = referrer
        unit.points.pop(owner, None)
        session.execute(
            insert_ignore(
                session, PointsEntry,
                {"customer_id": owner, "amount": command.amount, "key": command.key, "at": now,
                 "reason": (command.reason or f"{row.journey_id}.{command.step}")[:255]},
                ["key"],
            )
        )

    def _do_issue_referral(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.IssueReferral,
                           customer: Customer, now: datetime) -> None:
        session = unit.session
        existing = session.execute(
            select(ReferralCode.code).where(ReferralCode.customer_id == customer.id, ReferralCode.program == command.program)
        ).scalar_one_or_none()
        code = existing or command.code
        if existing is None:
            session.execute(
                insert_ignore(
                    session, ReferralCode,
                    {"code": code, "customer_id": customer.id, "program": command.program, "created_at": now},
                    ["code"],
                )
            )
        if command.store_as:
            profiles.merge_traits(customer, {command.store_as: code})

    def _do_exit(self, unit: UnitOfWork, row: Enrollment, journey: Journey, command: cmd.Exit,
                 customer: Customer, now: datetime) -> None:
        row.ended_at = row.ended_at or now

    # -- lookups ------------------------------------------------------------------------

    def _refresh_index(self, session: Session) -> None:
        running = self.deployed.running(session)
        if running.stamp == self._index_stamp:
            return
        # Events that may concern a running enrollment, of any version still running.
        watched: set[str] = set()
        for journey in running.live:
            watched |= _events_of(journey)
        self._index = TriggerIndex.build(running.active())
        self._paused = TriggerIndex.build([j for jid, j in running.current.items() if running.status.get(jid) == "paused"])
        self._watched = watched
        # Goal events, with the journeys they are the goal of and the longest conversion window.
        goals: dict[str, dict[str, timedelta]] = {}
        for journey in running.live:
            if journey.goal is not None:
                windows = goals.setdefault(journey.goal.event, {})
                windows[journey.id] = max(windows.get(journey.id, timedelta(0)), journey.goal.within)
        self._goals = goals
        self._index_stamp = running.stamp

    def _is_running(self, journey_id: str, session: Session) -> bool:
        return self.deployed.running(session).status.get(journey_id) == "active"

    @staticmethod
    def _active(session: Session, customer_id: int) -> list[Enrollment]:
        return _lock_active(session, [customer_id])

    @staticmethod
    def _history(unit: UnitOfWork, customer_id: int, journey_id: str, enrollment_id: str) -> list[Enrollment]:
        if (customer_id, journey_id) in unit.history:
            return unit.history[(customer_id, journey_id)]
        return _entry_history(unit.session, [customer_id], [journey_id], [enrollment_id])


def _may_have_merged(unit: UnitOfWork, event: Event, customer: Customer) -> bool:
    """Whether applying ``event`` merged a profile into ``customer``'s.

    Only an event that names a user id with an anonymous id, or an alias, merges; it did
    if one of the customers :meth:`Orchestrator.begin` was given is merged into theirs
    now (then forgotten, so the next event does not ask again).
    """
    if not ((event.user_id and event.anonymous_id) or (event.type == "alias" and event.previous_id)):
        return False
    merged = [c.id for c in unit.customers.values() if c.merged_into_id == customer.id]
    for customer_id in merged:
        del unit.customers[customer_id]
    return bool(merged)


def _write_turn_aways(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the turn-aways held back, count them per journey version and reason, and keep
    the latest :data:`TURN_AWAYS_KEPT` of each of their customers: three statements per batch.

    A turn-away already recorded (the same event applied again) is neither inserted nor counted.
    """
    if not rows:
        return
    inserted = insert_rows(session, TurnAway, rows, ["key"], ["key", "customer_id", "journey_id", "version", "reason"])
    if not inserted:
        return
    day_of = {row["key"]: row["at"].astimezone(timezone.utc).date() for row in rows}
    counts: dict[tuple[str, int, str, date], int] = {}
    for key, _, journey_id, version, reason in inserted:
        counted = (journey_id, version, reason, day_of[key])
        counts[counted] = counts.get(counted, 0) + 1
    add_counts(session, NotEnteredCount, ["journey_id", "version", "reason", "day"],
               [{"journey_id": j, "version": v, "reason": r, "day": d, "count": n} for (j, v, r, d), n in counts.items()])
    ranked = (
        select(TurnAway.id, func.row_number().over(partition_by=TurnAway.customer_id, order_by=TurnAway.id.desc()).label("n"))
        .where(TurnAway.customer_id.in_({customer_id for _, customer_id, *_ in inserted}))
        .subquery()
    )
    session.execute(delete(TurnAway).where(TurnAway.id.in_(select(ranked.c.id).where(ranked.c.n > TURN_AWAYS_KEPT))))


def _entry_history(session: Session, customer_ids: Collection[int], journey_ids: Collection[str],
                   candidates: Collection[str]) -> list[Enrollment]:
    """The enrollments that decide whether the customers may enter the journeys again.

    :func:`~engine.runtime.entry.may_enter` counts the active ones and looks at the
    latest start, so those are all it needs, however long the history: the active
    enrollments, the latest of each customer and journey, and any whose id is in
    ``candidates`` (the enrollment this event would make: it exists if the event is
    being applied again).
    """
    mine = (Enrollment.customer_id.in_(customer_ids), Enrollment.journey_id.in_(journey_ids))
    # The latest of each customer and journey: one index probe per pair
    # (ix_enrollments_customer_id_journey_id_started_at), however many enrollments came before.
    latest = (
        select(Enrollment.id)
        .where(Enrollment.customer_id == Customer.id, Enrollment.journey_id == JourneyRecord.id)
        .order_by(Enrollment.started_at.desc(), Enrollment.id.desc())
        .limit(1)
        .correlate(Customer, JourneyRecord)
        .scalar_subquery()
    )
    pairs = (
        select(latest).select_from(Customer).join(JourneyRecord, true())  # every customer with every journey
        .where(Customer.id.in_(customer_ids), JourneyRecord.id.in_(journey_ids))
    )
    return list(
        session.execute(
            select(Enrollment).where(
                *mine, or_(Enrollment.status == "active", Enrollment.id.in_(pairs), Enrollment.id.in_(candidates))
            )
        ).scalars()
    )


def _load_applied(unit: UnitOfWork, enrollment_ids: Collection[str]) -> None:
    """Load into ``unit`` the keys of the effects the enrollments (locked by this transaction) applied, in one query."""
    if not enrollment_ids:
        return
    for enrollment_id in enrollment_ids:
        unit.applied[enrollment_id] = set()
    for key, enrollment_id in unit.session.execute(
        select(AppliedEffect.key, AppliedEffect.enrollment_id).where(AppliedEffect.enrollment_id.in_(list(enrollment_ids)))
    ).all():
        unit.applied[enrollment_id].add(key)


def _lock_active(session: Session, customer_ids: Collection[int]) -> list[Enrollment]:
    """Lock the active enrollments of customers already locked; oldest first, as routing takes them.

    Locked in id order, after their customers (docs/operations.md, "Locks"); ``FOR NO KEY
    UPDATE``, so rows that refer to them (trace, deliveries, timers) are inserted without waiting.
    """
    rows = session.execute(
        select(Enrollment)
        .where(Enrollment.customer_id.in_(customer_ids), Enrollment.status == "active")
        .order_by(Enrollment.id)
        .with_for_update(key_share=True)
    ).scalars()
    return sorted(rows, key=lambda row: (row.started_at, row.id))


def _events_of(journey: Journey) -> set[str]:
    names = {journey.goal.event} if journey.goal is not None and journey.goal.event else set()
    names |= {outcome.event for outcome in journey.exit_on if outcome.event}
    names |= {step.event for step in journey.steps if isinstance(step, WaitUntilStep) and step.event}
    return names


def waits_for_earlier_events(session: Session, due: Sequence[tuple[Timer, Customer, Collection[str]]]) -> set[str]:
    """The keys of the timers to hold back until events stored before them are applied.

    ``due`` holds each timer, its enrollment's customer and the events the enrollment
    waits for (goal, exit and ``wait_until`` events). A timer is held back while its
    customer has such an event stored, not applied yet and not given up on (fewer than
    :data:`MAX_EVENT_ATTEMPTS` attempts), stamped at or before the timer's due time: the
    order placed at 10:59:59 whose queue message is behind the 11:00 reminder converts
    the enrollment first, and no reminder goes out. Events are matched to the customer
    by its user id and its anonymous ids. This is the one place the rule lives
    (docs/runtime.md, "Ordering rules").
    """
    wanted = {name for _, _, names in due for name in names}
    if not wanted:
        return set()
    customer_ids = {customer.id for _, customer, _ in due}
    owner: dict[tuple[str, str], int] = {  # (kind of id, id): customer id
        ("user", customer.external_id): customer.id for _, customer, _ in due if customer.external_id
    }
    owner.update(
        (("anonymous", anonymous_id), customer_id)
        for anonymous_id, customer_id in session.execute(
            select(AnonymousId.anonymous_id, AnonymousId.customer_id).where(AnonymousId.customer_id.in_(customer_ids))
        ).all()
    )
    if not owner:
        return set()
    name = func.coalesce(Event.event, Event.name, Event.type)
    pending = session.execute(
        select(Event.user_id, Event.anonymous_id, name, func.min(Event.timestamp))
        .where(
            Event.processed_at.is_(None),
            Event.attempts < MAX_EVENT_ATTEMPTS,
            name.in_(wanted),
            Event.timestamp <= max(timer.due_at for timer, _, _ in due),
            or_(Event.user_id.in_([i for kind, i in owner if kind == "user"]),
                Event.anonymous_id.in_([i for kind, i in owner if kind == "anonymous"])),
        )
        .group_by(Event.user_id, Event.anonymous_id, name)
    ).all()
    earliest: dict[tuple[int, str], datetime] = {}  # (customer id, event name): first pending stamp
    for user_id, anonymous_id, event_name, stamp in pending:
        for ident in (("user", user_id), ("anonymous", anonymous_id)):
            if ident in owner:
                key = (owner[ident], event_name)
                earliest[key] = min(earliest.get(key, stamp), stamp)
    return {
        timer.key
        for timer, customer, names in due
        if any((customer.id, n) in earliest and earliest[(customer.id, n)] <= timer.due_at for n in names)
    }


def _first_time(unit: UnitOfWork, command: cmd.Command, row: Enrollment, now: datetime) -> bool:
    session = unit.session
    values = {"key": command.key, "kind": command.type, "enrollment_id": row.id, "at": now}
    if row in session.new:
        # A new enrollment has applied nothing yet: no need to ask the database.
        unit.effects.append(values)  # inserted by finish()
        return True
    if row.id in unit.applied:
        # Locked, its effects loaded (_load_applied): nobody else applies any until the commit.
        if command.key in unit.applied[row.id]:
            return False
        unit.applied[row.id].add(command.key)
        unit.effects.append(values)  # inserted by finish()
        return True
    statement = insert_ignore(session, AppliedEffect, values, ["key"]).returning(AppliedEffect.key)
    return session.execute(statement).first() is not None


def _referrer(session: Session, customer: Customer, code: str | None, now: datetime) -> int | None:
    referral = session.get(Referral, customer.id)
    if referral is not None:
        return referral.referrer_id
    if not code:
        return None
    owner = session.execute(select(ReferralCode.customer_id).where(ReferralCode.code == code)).scalar_one_or_none()
    if owner is None or owner == customer.id:
        return None
    session.add(Referral(referred_id=customer.id, code=code, referrer_id=owner, at=now))
    session.flush()
    return owner


def _jsonable(value: Any) -> Any:
    """``value`` as JSON stores it: string keys, lists for tuples, ISO 8601 for datetimes."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str))
