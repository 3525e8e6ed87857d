"""The journey state machine: :func:`start` and :func:`advance`, pure functions of their inputs.

Neither reads a clock, touches storage or draws a random number: the time is ``now``, the
customer a read-only dict, and a split's path a hash of customer and journey. They run
steps until the enrollment reaches a ``wait``, a ``wait_until`` or its end, and return
the new state, the commands for the caller to carry out, and a trace of every decision.
See docs/runtime.md for the semantics of each step and the ordering rules.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.definitions.catalog import STAGES
from engine.definitions.model import (
    BranchStep,
    EndEvent,
    ExitStep,
    Journey,
    ReferralStep,
    RewardStep,
    SendStep,
    SplitStep,
    Step,
    UpdateStep,
    WaitStep,
    WaitUntilStep,
)
from engine.runtime.commands import (
    AwardPoints,
    CancelTimer,
    Command,
    Exit,
    IssueReferral,
    ScheduleTimer,
    Send,
    SetStage,
    Trace,
    UpdateProfile,
)
from engine.runtime.inputs import EventArrived, Input, TimerFired
from engine.runtime.state import EnrollmentState, Wait, iso, parse_iso

#: Steps one call may run before it gives up on a loop with no wait in it.
MAX_STEPS = 100


@dataclass(frozen=True)
class StepOutcome:
    """What :func:`start` or :func:`advance` returns.

    Attributes:
        state: the enrollment after the call (unchanged if the input was for nobody).
        commands: what to carry out, in order, each with its idempotency key.
        trace: every decision taken, in order (conditions with their value and error).
    """

    state: EnrollmentState
    commands: tuple[Command, ...] = ()
    trace: tuple[Trace, ...] = ()

    @property
    def changed(self) -> bool:
        """False when the input changed nothing (a stale timer, an event nobody waits for)."""
        return bool(self.commands) or any(t.what != "ignore" for t in self.trace)


def customer_variable(customer: Mapping[str, Any]) -> dict[str, Any]:
    """The CEL/template ``customer``: the traits, then ``id``, ``stage``, ``points``, ``timezone``,
    ``email`` and ``phone`` (None when the customer has none).

    ``customer`` is the runtime's view ``{"id", "traits", "stage", "points", "timezone"}``.
    """
    traits = dict(customer.get("traits") or {})
    return {
        **traits,
        "id": customer.get("id"),
        "stage": customer.get("stage"),
        "points": customer.get("points", 0),
        "timezone": customer.get("timezone") or traits.get("timezone") or "UTC",
        "email": traits.get("email"),
        "phone": traits.get("phone"),
    }


def render_send(journey: Journey, send: Send, customer: Mapping[str, Any], now: dt.datetime) -> dict[str, str]:
    """Render a :class:`Send`'s parts for ``customer`` at ``now`` (the delivery worker's job).

    Raises:
        TemplateError: a part failed to render; the message says why.
        KeyError: the journey has no step ``send.step``.
    """
    step = journey.step(send.step or "")
    if not isinstance(step, SendStep):
        raise KeyError(f"step {send.step!r} of journey {journey.id!r} is not a send step")
    return step.render({**send.variables, "customer": customer_variable(customer), "now": now})


def referral_code(customer: Mapping[str, Any], program: str) -> str:
    """The customer's code in ``program``: a name prefix and 8 characters of a hash, e.g. ``ADA-7F3KQ2XA``.

    Derived from customer id and program, so issuing it again gives the same code. Two
    customers may, very rarely, get the same one: the store of codes must be unique.
    """
    traits = customer.get("traits") or {}
    name = re.sub(r"[^A-Za-z]", "", str(traits.get("first_name") or "")).upper()[:6] or "REF"
    digest = hashlib.sha256(f"{program}\x00{customer.get('id')}".encode()).digest()
    return f"{name}-{base64.b32encode(digest).decode()[:8]}"


def start(
    journey: Journey,
    enrollment_id: str,
    customer: Mapping[str, Any],
    event: Mapping[str, Any] | None,
    now: dt.datetime,
    *,
    version: int = 1,
) -> StepOutcome:
    """Enroll ``customer`` in ``journey`` and run it to its first wait (or its end).

    The caller has already decided that the customer may enter (:func:`~engine.runtime.entry.route`
    and :func:`~engine.runtime.entry.may_enter`).

    Args:
        journey: the loaded journey (the version the enrollment will stay on).
        enrollment_id: a unique, stable id; it prefixes every idempotency key.
        customer: ``{"id", "traits", "stage", "points", "timezone"}``.
        event: the trigger event (Segment-shaped), or None for a segment trigger.
        now: the current time (aware).
        version: the journey version, recorded in the state.
    """
    iso(now)  # refuses a naive datetime
    state = EnrollmentState(
        id=enrollment_id,
        journey_id=journey.id,
        version=version,
        customer_id=str(customer.get("id")),
        started_at=now,
        trigger=dict(event or {}),
        audiences={},
    )
    run = _Run(journey, state, customer, now)
    run.trace.append(Trace(None, "enter", f"entered {journey.id} (version {version})", event.get("event") if event else None))
    if _later_stage(journey.stage, run.customer.get("stage")):
        run.set_stage(None, f"{enrollment_id}:enter", journey.stage, f"entered journey {journey.id}")
    run.run_from(journey.first.id)
    return run.outcome()


def advance(journey: Journey, state: EnrollmentState, input: Input, customer: Mapping[str, Any], now: dt.datetime) -> StepOutcome:
    """Apply one input to an enrollment and run it to its next wait (or its end).

    A stale timer (not the one the enrollment waits on), an event that is neither its goal,
    an exit event nor what it waits for, or any input to an ended enrollment changes
    nothing and emits nothing (``StepOutcome.changed`` is False).

    Ordering: an event whose ``timestamp`` is at or before the deadline of the timer the
    enrollment waits on wins over that timer, even at the same instant. An event stamped
    after a deadline whose timer has not fired yet first lets the timer fire (at its due
    time), then applies the event, so the result does not depend on which the worker
    happened to process first.
    """
    iso(now)
    run = _Run(journey, state, customer, now)
    if not state.active:
        run.trace.append(Trace(state.step, "ignore", f"the enrollment has ended ({state.status})"))
        return run.outcome()
    if isinstance(input, TimerFired):
        run.timer_fired(input.timer_key)
    elif isinstance(input, EventArrived):
        run.event_arrived(input.event)
    else:  # pragma: no cover - typing forbids it
        raise TypeError(f"unknown input {input!r}")
    return run.outcome()


def stop(journey: Journey, state: EnrollmentState, customer: Mapping[str, Any], now: dt.datetime, reason: str, *,
         keep_audiences: Collection[str] = ()) -> StepOutcome:
    """End an active enrollment from outside its journey, as ``exited`` with ``reason``.

    As an exit event would end it: its timer is cancelled and the customer leaves the
    audiences it added them to, except ``keep_audiences`` (another enrollment of the
    customer holds them there). Used when a profile merge leaves a customer in a journey
    more often than its entry rules allow (``reason`` ``merged``, docs/runtime.md
    "Merges"). An ended enrollment changes nothing.
    """
    iso(now)
    run = _Run(journey, state, customer, now)
    if not state.active:
        run.trace.append(Trace(state.step, "ignore", f"the enrollment has ended ({state.status})"))
        return run.outcome()
    run.leaving = frozenset(run.audiences) - frozenset(keep_audiences)
    run.end("exited", reason)
    return run.outcome()


#: A split's ``choose`` trace row names the path it took after this (journey stats read it).
SPLIT_PATH = "split path "


def converted_after_end(journey: Journey, state: EnrollmentState, event: Mapping[str, Any],
                        customer: Mapping[str, Any], now: dt.datetime) -> Trace | None:
    """The trace row that converts an enrollment which ended without converting, or None.

    A customer in a holdout (whose enrollment ends at once), or who completed or left the
    journey, still converts when they reach its goal (the event, with its ``when``) within
    the goal's conversion window (``goal.within``) after entering: that is what makes a
    holdout's lift measurable. The event's own ``timestamp`` decides, as for waits.
    """
    goal = journey.goal
    if goal is None or state.active or state.status == "converted" or event.get("event") != goal.event:
        return None
    at = _timestamp(event, now)
    if not state.started_at <= at <= state.started_at + goal.within:
        return None
    if goal.when is not None:
        result = goal.when.evaluate(_Run(journey, state, customer, now).activation(None, event))
        if not result.value:
            return None
    return Trace(state.step, "converted", f"{goal.event} arrived after the enrollment ended ({state.status}), "
                                          f"within the goal's {_days(goal.within)} of entering", goal.event)


def _days(window: dt.timedelta) -> str:
    return f"{window.days} days" if window.days and not window.seconds else str(window)


class _Run:
    """One call's work: a mutable copy of the state, a working copy of the customer."""

    def __init__(self, journey: Journey, state: EnrollmentState, customer: Mapping[str, Any], now: dt.datetime) -> None:
        self.journey = journey
        self.initial = state
        self.now = now
        self.status = state.status
        self.step: str | None = state.step
        self.wait: Wait | None = state.wait
        self.last_event = state.last_event
        self.visits = dict(state.visits)
        self.variant = dict(state.variant)
        self.ended_at = state.ended_at
        self.reason = state.reason
        self.audiences = dict(state.audiences) if state.audiences is not None else _audiences_of_visits(journey, state.visits)
        # The audiences to leave when the goal or an exit event ends the enrollment: those it
        # added before; an add on the event's ``goto`` path is about the ending and stays.
        self.leaving: frozenset[str] | None = None
        self.customer: dict[str, Any] = {
            "id": customer.get("id"),
            "traits": dict(customer.get("traits") or {}),
            "stage": customer.get("stage"),
            "points": customer.get("points") or 0,
            "timezone": customer.get("timezone"),
        }
        self.commands: list[Command] = []
        self.trace: list[Trace] = []
        # (status, reason) while running a goal's or exit event's ``goto``: however that path
        # ends (its end, an exit step, a wait), the enrollment ends with these.
        self.finishing: tuple[str, str] | None = None

    # -- results ---------------------------------------------------------------------------

    def outcome(self) -> StepOutcome:
        state = self.initial.evolve(
            status=self.status,
            step=self.step,
            wait=self.wait,
            last_event=self.last_event,
            visits=self.visits,
            variant=self.variant,
            ended_at=self.ended_at,
            reason=self.reason,
            audiences=self.audiences,
        )
        if not self.commands and all(t.what == "ignore" for t in self.trace):
            state = self.initial
        return StepOutcome(state, tuple(self.commands), tuple(self.trace))

    @property
    def active(self) -> bool:
        return self.status == "active"

    # -- inputs ----------------------------------------------------------------------------

    def timer_fired(self, timer_key: str) -> None:
        wait = self.wait
        if wait is None or wait.timer_key != timer_key:
            self.trace.append(Trace(self.step, "ignore", f"stale timer {timer_key}: the enrollment waits on {wait.timer_key if wait else 'nothing'}"))
            return
        step = self.journey.step(self.step or "")
        self.wait = None
        if isinstance(step, WaitUntilStep):
            self.trace.append(Trace(step.id, "timeout", f"no {step.event} within {step.timeout}", iso(wait.until)))
            self.run_from(step.on_timeout)
        else:
            self.trace.append(Trace(step.id, "resume", "wait over", iso(wait.until)))
            self.run_from(step.next)

    def event_arrived(self, event: Mapping[str, Any]) -> None:
        name = event.get("event") if event.get("type", "track") == "track" else None
        if not name or not self._concerns(name):
            self.trace.append(Trace(self.step, "ignore", f"nothing here waits for {name or event.get('type')!r}"))
            return
        goal = self.journey.goal
        if goal is not None and goal.event == name and self._holds(goal, event, "goal"):
            self._finish_on(goal, event, "converted", f"goal:{name}")
            return
        for exit_on in self.journey.exit_on:
            if exit_on.event == name and self._holds(exit_on, event, "exit_on"):
                self._finish_on(exit_on, event, "exited", f"exit_on:{name}")
                return
        self._catch_up(name, _timestamp(event, self.now))
        wait = self.wait
        if wait is not None and wait.kind == "event" and wait.event == name:
            step = self.journey.step(self.step or "")
            if not isinstance(step, WaitUntilStep):  # pragma: no cover - a corrupt state
                raise ValueError(f"enrollment {self.initial.id} waits for an event at step {step.id}, a {step.kind}")
            if step.when is not None:
                result = step.when.evaluate(self.activation(step, event))
                self.trace.append(Trace(step.id, "condition", step.when.source, result.value, result.error))
                if not result.value:
                    return
            self._cancel_timer()
            self.last_event = dict(event)
            self.trace.append(Trace(step.id, "resume", f"{name} arrived", name))
            self.run_from(step.on_event)
            return
        self.trace.append(Trace(self.step, "ignore", f"{name} changes nothing: its condition did not hold, or nothing waits for it"))

    def _catch_up(self, name: str, happened: dt.datetime) -> None:
        """A ``wait_until`` timeout due before the event happened, not fired yet, fires first.

        It runs at its due time, so the outcome does not depend on whether the worker saw the
        timer or the event first. Only for the awaited event: the goal and exit events end
        the enrollment where it is, without first catching up on late timers (which would
        send, say, a reminder after the customer has ordered).
        """
        for _ in range(MAX_STEPS):
            wait = self.wait
            if not (self.active and wait and wait.kind == "event" and wait.event == name and wait.timer_key):
                return
            if not (wait.until and wait.until < happened and wait.until <= self.now):
                return
            saved, self.now = self.now, wait.until
            self.trace.append(Trace(self.step, "catch_up", f"the timeout was due at {iso(wait.until)}, before {name} at {iso(happened)}"))
            self.timer_fired(wait.timer_key)
            self.now = saved

    def _concerns(self, name: str) -> bool:
        journey = self.journey
        if journey.goal is not None and journey.goal.event == name:
            return True
        if any(o.event == name for o in journey.exit_on):
            return True
        return self.wait is not None and self.wait.kind == "event" and self.wait.event == name

    def _holds(self, outcome: EndEvent, event: Mapping[str, Any], what: str) -> bool:
        if outcome.when is None:
            return True
        result = outcome.when.evaluate(self.activation(None, event))
        self.trace.append(Trace(self.step, "condition", f"{what} {outcome.event}: {outcome.when.source}", result.value, result.error))
        return result.value

    def _finish_on(self, outcome: EndEvent, event: Mapping[str, Any], status: str, reason: str) -> None:
        """The goal or an exit event: end now, after running ``goto`` and what follows it."""
        self._cancel_timer()
        self.last_event = dict(event)
        self.trace.append(Trace(self.step, "goal" if status == "converted" else "exit_on", f"{outcome.event} arrived", outcome.event))
        self.finishing = (status, reason)
        self.leaving = frozenset(self.audiences)
        if outcome.goto is not None:
            self.run_from(outcome.goto)
        if self.active:
            self.end(status, reason)

    def _cancel_timer(self) -> None:
        if self.wait is not None and self.wait.timer_key is not None:
            self.commands.append(CancelTimer(key=self.wait.timer_key, step=self.step))
        self.wait = None

    # -- steps -----------------------------------------------------------------------------

    def run_from(self, step_id: str | None) -> None:
        """Run steps from ``step_id`` until a wait or the end."""
        ran = 0
        while self.active:
            if step_id is None:
                self.end("completed", "completed")
                return
            if ran >= MAX_STEPS:
                self.end("exited", f"loop: {MAX_STEPS} steps ran without a wait (stopped before step {step_id})")
                return
            ran += 1
            step = self.journey.step(step_id)
            visit = self.visits[step.id] = self.visits.get(step.id, 0) + 1
            key = f"{self.initial.id}:{step.id}:{visit}"
            self.step = step.id
            stage = step.set_stage or step.stage if isinstance(step, UpdateStep) else step.stage
            if stage and stage != self.customer.get("stage"):
                self.set_stage(step.id, f"{key}:stage", stage, f"step {step.id} of journey {self.journey.id}")
            if self.finishing and isinstance(step, (WaitStep, WaitUntilStep)):
                self.trace.append(Trace(step.id, "run", "a clean-up path stops at its first wait"))
                self.end("completed", "completed")
                return
            step_id = self.run_step(step, key)
            if step_id is _WAITING:
                return

    def run_step(self, step: Step, key: str) -> str | None:
        """Run one step; return the next step id, None for the end, or _WAITING."""
        if isinstance(step, SendStep):
            return self._send(step, key)
        if isinstance(step, WaitStep):
            due = step.due(self.now, self._zone(step))
            self._wait(step, key, Wait("timer", due, None, key))
            return _WAITING
        if isinstance(step, WaitUntilStep):
            until = self.now + step.timeout if step.timeout is not None else None
            self._wait(step, key, Wait("event", until, step.event, key if until else None))
            return _WAITING
        if isinstance(step, BranchStep):
            return self._branch(step)
        if isinstance(step, SplitStep):
            path = step.choose(self.customer["id"] or "", self.journey.id)
            self.variant[step.id] = "control" if path.holdout else path.name
            self.trace.append(Trace(step.id, "choose", SPLIT_PATH + path.name, path.name))
            if path.holdout:
                self.end("exited", "holdout")
                return _WAITING
            return path.goto
        if isinstance(step, UpdateStep):
            if step.traits:
                self.emit(UpdateProfile(key=key, step=step.id, traits=dict(step.traits)))
                self.customer["traits"].update(step.traits)
            self.trace.append(Trace(step.id, "run", "update", dict(step.traits) or None))
            return step.next
        if isinstance(step, RewardStep):
            return self._reward(step, key)
        if isinstance(step, ReferralStep):
            existing = self.customer["traits"].get(step.store_as)
            code = existing if isinstance(existing, str) and existing else referral_code(self.customer, step.program)
            self.emit(IssueReferral(key=key, step=step.id, program=step.program, code=code, store_as=step.store_as))
            self.customer["traits"][step.store_as] = code
            self.trace.append(Trace(step.id, "run", f"referral code in {step.program}", code))
            return step.next
        if isinstance(step, ExitStep):
            self.end("converted" if step.conversion else "exited", step.reason or f"exit step {step.id}")
            return _WAITING
        raise TypeError(f"unknown step kind {type(step).__name__}")  # pragma: no cover

    def _send(self, step: SendStep, key: str) -> str | None:
        content = {"parts": sorted(step.parts), "url": step.url, "audience": step.audience, "action": step.action}
        variables = {
            "trigger": dict(self.initial.trigger),
            "event": dict(self.current_event()),
            "context": self.context(step),
        }
        policy = self.journey.policy
        self.emit(
            Send(key=key, step=step.id, channel=step.channel, template=step.template,
                 content=content, topic=policy.topic, kind=self.journey.send_kind(step), variables=variables)
        )  # fmt: skip
        self.trace.append(Trace(step.id, "run", f"send {step.channel} {step.template or step.audience or ''}".strip(), step.channel))
        if step.audience is not None:
            if step.action == "add":
                self.audiences[step.audience] = step.id
            else:
                self.audiences.pop(step.audience, None)
        return step.next

    def _leave_audiences(self, status: str) -> None:
        """A conversion or an exit takes the customer out of every audience this enrollment added them to.

        One ``remove`` per audience, keyed by enrollment and audience, so a second attempt is
        a no-op. It is not marketing (``transactional``); it is attributed to the step that
        added the customer, and names no parts, so the delivery worker renders nothing.
        """
        if status not in ("converted", "exited"):
            return  # a journey run to its end keeps its audiences: a remove step takes them out
        for audience, added_by in list(self.audiences.items()):
            if self.leaving is not None and audience not in self.leaving:
                continue
            try:
                step: Step | None = self.journey.step(added_by)
            except KeyError:  # a deploy moved the enrollment to a version without that step
                step = None
            channel = step.channel if isinstance(step, SendStep) else "retargeting"
            self.emit(
                Send(key=f"{self.initial.id}:leave:{audience}", step=added_by, channel=channel,
                     content={"parts": [], "url": None, "audience": audience, "action": "remove"},
                     topic=self.journey.policy.topic, kind="transactional",
                     variables={"trigger": dict(self.initial.trigger), "event": dict(self.current_event()),
                                "context": self.context(step)})
            )  # fmt: skip
            self.trace.append(Trace(added_by, "leave", f"remove from audience {audience}: the enrollment {status}", audience))
            del self.audiences[audience]

    def _wait(self, step: Step, key: str, wait: Wait) -> None:
        self.wait = wait
        if wait.until is not None:
            self.emit(ScheduleTimer(key=key, step=step.id, at=wait.until))
        detail = f"until {iso(wait.until)}" if wait.until else "forever"
        if wait.event:
            detail = f"for {wait.event}, " + ("until " + str(iso(wait.until)) if wait.until else "with no timeout")
        self.trace.append(Trace(step.id, "wait", detail, iso(wait.until)))

    def _branch(self, step: BranchStep) -> str | None:
        activation = self.activation(step)
        for case in step.cases:
            result = case.when.evaluate(activation)
            self.trace.append(Trace(step.id, "condition", case.when.source, result.value, result.error))
            if result.value:
                return case.goto
        self.trace.append(Trace(step.id, "choose", "else", step.next))
        return step.next

    def _reward(self, step: RewardStep, key: str) -> str | None:
        result = step.amount(self.activation(step))
        if result.error is not None:
            self.trace.append(Trace(step.id, "run", "reward: the amount failed, no points", None, result.error))
            return step.next
        amount = int(result.value)
        code = None
        if step.to == "referrer":
            code = _referral_code_of(self.current_event(), self.initial.trigger, self.customer["traits"])
        if amount:
            self.emit(AwardPoints(key=key, step=step.id, amount=amount, reason=step.reason, to=step.to, referral_code=code))
            if step.to == "customer":
                self.customer["points"] = int(self.customer["points"]) + amount
        self.trace.append(Trace(step.id, "run", f"reward {step.to}", amount))
        return step.next

    # -- helpers ---------------------------------------------------------------------------

    def emit(self, command: Command) -> None:
        self.commands.append(command)

    def set_stage(self, step: str | None, key: str, stage: str, reason: str) -> None:
        self.emit(SetStage(key=key, step=step, stage=stage, reason=reason))
        self.customer["stage"] = stage
        self.trace.append(Trace(step, "stage", reason, stage))

    def end(self, status: str, reason: str) -> None:
        if self.finishing is not None:  # the goal or exit event decides how it ends
            status, reason = self.finishing
        self._cancel_timer()
        self.status, self.reason, self.ended_at = status, reason, self.now
        self._leave_audiences(status)
        self.emit(Exit(key=f"{self.initial.id}:exit", step=self.step, status=status, reason=reason))
        self.trace.append(Trace(self.step, "end", reason, status))
        self.step = None

    def current_event(self) -> Mapping[str, Any]:
        return self.last_event if self.last_event is not None else self.initial.trigger

    def context(self, step: Step | None) -> dict[str, Any]:
        journey = self.journey
        return {
            "journey": {"id": journey.id, "name": journey.name, "stage": journey.stage},
            "step": {"id": step.id if step is not None else (self.step or "")},
            "enrollment": {"id": self.initial.id, "started_at": iso(self.initial.started_at)},
        }

    def activation(self, step: Step | None, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "event": dict(event if event is not None else self.current_event()),
            "trigger": dict(self.initial.trigger),
            "customer": customer_variable(self.customer),
            "context": self.context(step),
            "now": self.now,
        }

    def _zone(self, step: Step) -> dt.tzinfo:
        name = self.customer.get("timezone") or self.customer["traits"].get("timezone") or "UTC"
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            self.trace.append(Trace(step.id, "run", f"unknown time zone {name!r}: using UTC"))
            return dt.timezone.utc


_WAITING: Any = object()  # run_step's answer when the enrollment waits or has ended


def _audiences_of_visits(journey: Journey, visits: Mapping[str, int]) -> dict[str, str]:
    """The audiences a state stored before they were tracked has added: each add step it ran,
    unless it also ran a remove step of that audience (the order of the two is not known)."""
    sends = [s for s in journey.steps if isinstance(s, SendStep) and s.audience is not None and visits.get(s.id)]
    removed = {s.audience for s in sends if s.action != "add"}
    return {s.audience: s.id for s in sends if s.action == "add" and s.audience not in removed}  # type: ignore[misc]


def _later_stage(stage: str, current: str | None) -> bool:
    """True when ``stage`` is further along the funnel than ``current`` (or there is none)."""
    if current not in STAGES:
        return stage in STAGES
    return STAGES.index(stage) > STAGES.index(current)


def _timestamp(event: Mapping[str, Any], default: dt.datetime) -> dt.datetime:
    value = event.get("timestamp")
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        return parse_iso(value) or default if isinstance(value, str) else default
    except ValueError:
        return default


def _referral_code_of(event: Mapping[str, Any], trigger: Mapping[str, Any], traits: Mapping[str, Any]) -> str | None:
    for source in (event, trigger):
        properties = source.get("properties")
        if isinstance(properties, Mapping) and isinstance(properties.get("referral_code"), str):
            return str(properties["referral_code"])
    referred_by = traits.get("referred_by")
    return str(referred_by) if isinstance(referred_by, str) else None
