"""Run journeys in memory on a virtual clock: the in-memory twin of the workers.

:class:`Simulator` routes Segment events with :func:`engine.runtime.route`, enrolls with
:func:`~engine.runtime.may_enter` and :func:`~engine.runtime.start`, fires timers from a
heap in due order, and carries out every command itself: profile traits, stage and its
history, a points ledger, referral codes, and sends, which it renders and records but never
delivers. Nothing leaves the process. ``journey simulate`` and :class:`engine.testing.JourneyTest`
are built on it.

Ordering: when an event and a timer are due at the same instant, the event is handled
first (so an awaited event stamped exactly at a timeout wins; see docs/runtime.md).
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.definitions.model import Journey
from engine.errors import TemplateError
from engine.runtime import (
    AwardPoints,
    CancelTimer,
    Command,
    Enrollment,
    EventArrived,
    Exit,
    IssueReferral,
    Outcome,
    ScheduleTimer,
    Send,
    SetStage,
    TimerFired,
    Trace,
    TriggerIndex,
    UpdateProfile,
    advance,
    may_enter,
    render_send,
    route,
    start,
)
from engine.runtime.state import iso, parse_iso

#: How far past the last event the simulator runs when told no end: far enough for any
#: shipped journey, bounded so that a journey that loops through waits still stops.
DEFAULT_HORIZON = dt.timedelta(days=365)


@dataclass(frozen=True)
class Effect:
    """One thing that happened to a customer, as ``journey simulate --json`` prints it.

    Attributes:
        at: when (virtual time).
        customer: the customer's id.
        journey: the journey's id (None for an event nobody routed).
        enrollment: the enrollment's id, if any.
        step: the step that caused it, if any.
        effect: ``enter``, ``not_entered``, ``send``, ``profile``, ``stage``, ``points``,
            ``referral``, ``exit``.
        detail: the rest: for a send ``channel``, ``template``, ``kind`` (marketing or
            transactional), ``content`` (rendered parts) or ``error`` (why rendering failed),
            ``audience``/``action``; for ``stage`` ``from`` and
            ``to``; for ``points`` ``amount``, ``to``, ``balance``; for ``exit`` ``status``, ``reason``.
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
        """A send's channel."""
        return self.detail.get("channel")

    @property
    def template(self) -> str | None:
        """A send's template name."""
        return self.detail.get("template")

    @property
    def kind(self) -> str | None:
        """A send's kind: ``marketing`` or ``transactional``."""
        return self.detail.get("kind")

    @property
    def content(self) -> Mapping[str, str]:
        """A send's rendered parts (empty if rendering failed or the channel has none)."""
        return self.detail.get("content") or {}

    def to_dict(self) -> dict[str, Any]:
        """One JSON object: at, customer, journey, enrollment, step, effect, then the details."""
        return {
            "at": iso(self.at),
            "customer": self.customer,
            "journey": self.journey,
            "enrollment": self.enrollment,
            "step": self.step,
            "effect": self.effect,
            **dict(self.detail),
        }


@dataclass
class SimCustomer:
    """A customer held in memory: traits, stage with its history, points ledger, referral codes."""

    id: str
    traits: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    timezone: str | None = None
    points: int = 0
    stage_history: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    referral_codes: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        """The read-only view the runtime takes."""
        return {"id": self.id, "traits": dict(self.traits), "stage": self.stage, "points": self.points, "timezone": self.timezone}


class Simulator:
    """Journeys, customers, enrollments and timers in memory, on a virtual clock.

    Args:
        journeys: the journeys to run (each at version 1).
        start: the initial virtual time (default: the first event's time).
    """

    def __init__(self, journeys: Iterable[Journey], *, start: dt.datetime | None = None) -> None:
        self.journeys: dict[str, Journey] = {j.id: j for j in journeys}
        self.index = TriggerIndex.build(self.journeys.values())
        self.now: dt.datetime | None = start
        self.customers: dict[str, SimCustomer] = {}
        self.enrollments: dict[str, Enrollment] = {}
        self.traces: dict[str, list[Trace]] = {}
        self.effects: list[Effect] = []
        self.referrals: list[dict[str, Any]] = []  # who referred whom
        self.received: list[tuple[int, dt.datetime, str, Mapping[str, Any]]] = []  # (effects so far, at, customer, event)
        self._codes: dict[str, str] = {}  # referral code -> customer id
        self._timers: list[tuple[dt.datetime, int, str, str]] = []  # (due, seq, timer key, enrollment id)
        self._live_timers: dict[str, str] = {}  # timer key -> enrollment id
        self._applied: set[tuple[str, str]] = set()  # (command type, key): the unique constraint
        self._seq = itertools.count()

    # -- driving ----------------------------------------------------------------------------

    def run(self, events: Iterable[Mapping[str, Any]], *, until: dt.timedelta | None = None) -> list[Effect]:
        """Handle ``events`` in time order, then run ``until`` past the last one.

        Without ``until``, run until no timer is left, at most :data:`DEFAULT_HORIZON` past
        the last event. Returns every effect, in order.
        """
        ordered = sorted(events, key=lambda e: self._timestamp(e))
        for item in ordered:
            self.send(item)
        if self.now is None:
            return self.effects
        if until is not None:
            self.advance_to(self.now + until)
        else:
            horizon = self.now + DEFAULT_HORIZON
            while self._timers and self._timers[0][0] <= horizon:
                self.advance_to(self._timers[0][0])
        return self.effects

    def send(self, event: Mapping[str, Any]) -> None:
        """Handle one Segment event at its ``timestamp`` (now, if it has none).

        Timers due strictly before the event fire first; timers due at the same instant fire
        after it.
        """
        at = self._timestamp(event)
        if self.now is not None and at < self.now:
            at = self.now  # an event from the past is handled now, as a worker would
        self._fire_timers(before=at)
        self.now = at
        data = dict(event)
        data.setdefault("timestamp", iso(at))
        data.setdefault("type", "track")
        customer_id = str(data.get("userId") or data.get("anonymousId") or "")
        if not customer_id:
            raise ValueError(f"event {data.get('messageId') or data.get('event')!r} has neither userId nor anonymousId")
        customer = self.customer(customer_id)
        before = customer.view()
        if data["type"] == "identify":
            traits = data.get("traits") or {}
            customer.traits.update(traits)
            if isinstance(traits.get("timezone"), str):
                customer.timezone = traits["timezone"]
            if isinstance(traits.get("referral_code"), str):
                # A code the customer already has (from before the engine): theirs in "default".
                customer.referral_codes.setdefault("default", traits["referral_code"])
                self._codes.setdefault(traits["referral_code"], customer.id)
        if customer.timezone is None and isinstance((data.get("context") or {}).get("timezone"), str):
            customer.timezone = data["context"]["timezone"]
        customer.events.append(data)
        self.received.append((len(self.effects), at, customer_id, data))
        active = [(e, self.journeys[e.journey_id]) for e in self.enrollments.values() if e.customer_id == customer_id and e.active]
        for item in route(self.index, data, customer.view(), active, at, before=before):
            if item.action == "advance" and item.enrollment is not None:
                current = self.enrollments[item.enrollment.id]  # an earlier route may have moved it
                self._apply(item.journey, advance(item.journey, current, EventArrived(data), customer.view(), at))
            else:
                self._enroll(item.journey, customer, data if item.why == "trigger" else None, at, item.trace)

    def advance(self, delta: dt.timedelta) -> None:
        """Move the clock forward by ``delta``, firing every timer due on the way, in order."""
        if self.now is None:
            raise ValueError("the clock has not started: give start= or send an event first")
        self.advance_to(self.now + delta)

    def advance_to(self, when: dt.datetime) -> None:
        """Move the clock to ``when``, firing every timer due at or before it, in order."""
        self._fire_timers(upto=when)
        if self.now is None or when > self.now:
            self.now = when

    # -- reading ----------------------------------------------------------------------------

    def customer(self, customer_id: str) -> SimCustomer:
        """The customer with this id (created on first sight)."""
        if customer_id not in self.customers:
            self.customers[customer_id] = SimCustomer(customer_id)
        return self.customers[customer_id]

    def enrollments_of(self, customer_id: str, journey_id: str | None = None) -> list[Enrollment]:
        """A customer's enrollments, oldest first, optionally in one journey."""
        return [
            e for e in self.enrollments.values()
            if e.customer_id == customer_id and (journey_id is None or e.journey_id == journey_id)
        ]  # fmt: skip

    def timeline(self, customer_id: str) -> list[Effect]:
        """A customer's effects, in order."""
        return [e for e in self.effects if e.customer == customer_id]

    # -- internals --------------------------------------------------------------------------

    def _timestamp(self, event: Mapping[str, Any]) -> dt.datetime:
        value = event.get("timestamp")
        if value is None:
            if self.now is None:
                raise ValueError("the first event needs a timestamp, or give the simulator a start time")
            return self.now
        moment = value if isinstance(value, dt.datetime) else parse_iso(str(value))
        if moment is None or moment.tzinfo is None:
            raise ValueError(f"event timestamp {value!r} has no time zone")
        return moment

    def _fire_timers(self, *, before: dt.datetime | None = None, upto: dt.datetime | None = None) -> None:
        while self._timers:
            due, _, key, enrollment_id = self._timers[0]
            if (before is not None and due >= before) or (upto is not None and due > upto):
                return
            heapq.heappop(self._timers)
            if self._live_timers.get(key) != enrollment_id:
                continue  # cancelled
            del self._live_timers[key]
            if self.now is None or due > self.now:
                self.now = due
            state = self.enrollments[enrollment_id]
            journey = self.journeys[state.journey_id]
            customer = self.customer(state.customer_id)
            self._apply(journey, advance(journey, state, TimerFired(key), customer.view(), due))

    def _enroll(self, journey: Journey, customer: SimCustomer, event: Mapping[str, Any] | None, at: dt.datetime, trace: tuple[Trace, ...]) -> None:
        ok, reason = may_enter(journey, self.enrollments_of(customer.id, journey.id), at)
        if not ok:
            self.effects.append(Effect(at, customer.id, journey.id, None, None, "not_entered", {"reason": reason}))
            return
        enrollment_id = f"e{len(self.enrollments) + 1}"
        self.traces[enrollment_id] = list(trace)
        trigger = event.get("event") if event else "segment"
        self.effects.append(Effect(at, customer.id, journey.id, enrollment_id, None, "enter", {"trigger": trigger}))
        self._apply(journey, start(journey, enrollment_id, customer.view(), event, at))

    def _apply(self, journey: Journey, outcome: Outcome) -> None:
        state = outcome.state
        self.enrollments[state.id] = state
        self.traces.setdefault(state.id, []).extend(outcome.trace)
        customer = self.customer(state.customer_id)
        for command in outcome.commands:
            if (command.type, command.key) in self._applied and not isinstance(command, CancelTimer):
                continue  # already done: the unique constraint on the key in the real thing
            self._applied.add((command.type, command.key))
            self._carry_out(journey, state, customer, command)

    def _carry_out(self, journey: Journey, state: Enrollment, customer: SimCustomer, command: Command) -> None:
        at = self.now or state.started_at

        def record(effect: str, **detail: Any) -> None:
            self.effects.append(Effect(at, customer.id, journey.id, state.id, command.step, effect, detail))

        if isinstance(command, ScheduleTimer):
            self._live_timers[command.key] = state.id
            heapq.heappush(self._timers, (command.at, next(self._seq), command.key, state.id))
        elif isinstance(command, CancelTimer):
            self._live_timers.pop(command.key, None)
        elif isinstance(command, Send):
            record("send", **self._render(journey, command, customer, at))
        elif isinstance(command, UpdateProfile):
            customer.traits.update(command.traits)
            record("profile", traits=dict(command.traits))
        elif isinstance(command, SetStage):
            if customer.stage != command.stage:
                customer.stage_history.append({"at": iso(at), "from": customer.stage, "to": command.stage, "reason": command.reason})
                record("stage", **{"from": customer.stage, "to": command.stage, "reason": command.reason})
                customer.stage = command.stage
        elif isinstance(command, AwardPoints):
            self._award(customer, command, record, at)
        elif isinstance(command, IssueReferral):
            customer.referral_codes[command.program] = command.code
            customer.traits[command.store_as] = command.code
            self._codes.setdefault(command.code, customer.id)
            record("referral", program=command.program, code=command.code)
        elif isinstance(command, Exit):
            record("exit", status=command.status, reason=command.reason)

    def _render(self, journey: Journey, send: Send, customer: SimCustomer, at: dt.datetime) -> dict[str, Any]:
        detail: dict[str, Any] = {"channel": send.channel, "template": send.template, "kind": send.kind, "key": send.key}
        if send.content.get("audience"):
            detail.update(audience=send.content["audience"], action=send.content.get("action"))
        if send.content.get("url"):
            detail["url"] = send.content["url"]
        try:
            detail["content"] = render_send(journey, send, customer.view(), at)
        except TemplateError as exc:
            detail["error"] = str(exc)
        return detail

    def _award(self, customer: SimCustomer, command: AwardPoints, record: Any, at: dt.datetime) -> None:
        target = customer
        if command.to == "referrer":
            owner = self._codes.get(command.referral_code or "")
            if owner is None or owner == customer.id:
                why = "no referral code" if not command.referral_code else f"nobody owns referral code {command.referral_code!r}"
                record("points", amount=0, to="referrer", skipped=why)
                return
            target = self.customer(owner)
            self.referrals.append({"at": iso(at), "referrer": owner, "referred": customer.id, "code": command.referral_code})
        target.points += command.amount
        target.ledger.append({"at": iso(at), "amount": command.amount, "reason": command.reason, "key": command.key})
        record("points", amount=command.amount, to=command.to, customer_credited=target.id, balance=target.points, reason=command.reason)

    def iter_customers(self) -> Iterator[SimCustomer]:
        """Customers in the order they were first seen."""
        return iter(self.customers.values())
