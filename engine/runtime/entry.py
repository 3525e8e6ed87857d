"""Who enters a journey, and which enrollments an event concerns: pure, shared by worker and simulator.

:class:`TriggerIndex` indexes journeys by trigger event name, so routing an event costs
the same with 1,000 journeys as with one. :func:`route` says, for one event, which active
enrollments to advance (goal, exit event, ``wait_until``) and which journeys it may enroll
the customer in (trigger event and condition); :func:`may_enter` applies the entry rules
(re-entry and concurrency) to the customer's earlier enrollments in that journey.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.definitions.model import Journey
from engine.runtime.commands import Trace
from engine.runtime.machine import customer_variable
from engine.rules import field_references
from engine.runtime.state import EnrollmentState

# Why a journey turned a customer away (the ``reason`` of a turn-away; docs/runtime.md, "Why not").
CONDITION_FALSE = "condition_false"  # the trigger condition was false (or failed)
REENTRY_REFUSED = "reentry_refused"  # re-entry ``never``, or ``after D`` not yet
PAUSED = "paused"  # the journey is paused
ENTRY_LIMIT = "entry_limit"  # already in it ``entry.concurrent`` times


@dataclass(frozen=True)
class Route:
    """One thing to do with an event, in order.

    Attributes:
        action: ``advance`` (call :func:`~engine.runtime.machine.advance` on ``enrollment``
            with ``EventArrived``), ``enroll`` (check :func:`may_enter`, then call
            :func:`~engine.runtime.machine.start`) or ``turn_away`` (the trigger event
            matched but its condition was false: record it, enroll nobody).
        journey: the journey (for ``advance``, the version the enrollment runs on).
        enrollment: the enrollment to advance; None for ``enroll``.
        why: ``goal``, ``exit_on``, ``wait_until``, ``trigger``, ``segment``, or for
            ``turn_away`` :data:`CONDITION_FALSE`.
        trace: the trigger condition's evaluation, for the explain log.
        detail: for ``turn_away``: ``<condition> was false`` (and its error, if it failed).
        value: for ``turn_away``: the values of the fields the condition reads, by name.
    """

    action: str
    journey: Journey
    enrollment: EnrollmentState | None = None
    why: str = ""
    trace: tuple[Trace, ...] = ()
    detail: str = ""
    value: dict[str, Any] | None = None


@dataclass
class TriggerIndex:
    """The deployed journeys, indexed by the event names that concern them."""

    by_trigger: dict[str, list[Journey]] = field(default_factory=dict)
    segments: list[Journey] = field(default_factory=list)

    @classmethod
    def build(cls, journeys: Iterable[Journey]) -> TriggerIndex:
        """Index ``journeys`` (the live version of each) by trigger event; segment triggers apart."""
        index = cls()
        for journey in sorted(journeys, key=lambda j: j.id):
            if journey.trigger.event:
                index.by_trigger.setdefault(journey.trigger.event, []).append(journey)
            elif journey.trigger.segment is not None or journey.trigger.when is not None:
                index.segments.append(journey)
        return index

    def triggered_by(self, name: str) -> list[Journey]:
        """The journeys whose trigger is the event ``name``."""
        return self.by_trigger.get(name, [])


def concerns(journey: Journey, enrollment: EnrollmentState, name: str) -> str | None:
    """Why event ``name`` matters to an active enrollment (``goal``, ``exit_on``, ``wait_until``), or None."""
    if not enrollment.active:
        return None
    if journey.goal is not None and journey.goal.event == name:
        return "goal"
    if any(o.event == name for o in journey.exit_on):
        return "exit_on"
    wait = enrollment.wait
    if wait is not None and wait.kind == "event" and wait.event == name:
        return "wait_until"
    return None


def route(
    index: TriggerIndex,
    event: Mapping[str, Any],
    customer: Mapping[str, Any],
    active: Sequence[tuple[EnrollmentState, Journey]],
    now: dt.datetime,
    *,
    before: Mapping[str, Any] | None = None,
) -> list[Route]:
    """What ``event`` (already applied to ``customer``) does: advances first, then enrollments.

    Advances come first so that an event that both ends an enrollment and triggers the
    journey (``winback``'s ``order_completed``) ends the old one before :func:`may_enter`
    decides about the new one.

    Args:
        index: the deployed journeys.
        event: the Segment event (``track`` routes on its name, ``identify`` to segment triggers).
        customer: the customer view after the event was applied (traits merged).
        active: the customer's active enrollments, each with the journey version it runs on.
        now: the current time.
        before: the customer view before the event, for segment triggers: they enroll when
            their condition starts to hold (held before: no). None means "did not hold".
    """
    routes: list[Route] = []
    kind = event.get("type", "track")
    name = event.get("event") if kind == "track" else None
    if name:
        for enrollment, journey in active:
            why = concerns(journey, enrollment, name)
            if why is not None:
                routes.append(Route("advance", journey, enrollment, why))
        for journey in index.triggered_by(name):
            trigger = journey.trigger
            if trigger.when is None:
                routes.append(Route("enroll", journey, None, "trigger"))
                continue
            activation = _activation(journey, event, customer, now)
            result = trigger.when.evaluate(activation)
            trace = (Trace(None, "condition", f"trigger {name}: {trigger.when.source}", result.value, result.error),)
            if result.value:
                routes.append(Route("enroll", journey, None, "trigger", trace))
            else:
                detail = f"{trigger.when.source} was false" + (f" ({result.error})" if result.error else "")
                routes.append(Route("turn_away", journey, None, CONDITION_FALSE, trace, detail,
                                    _read(trigger.when.source, activation)))
    elif kind == "identify":
        for journey in index.segments:
            when = journey.trigger.when
            if when is None:
                continue
            result = when.evaluate(_activation(journey, {}, customer, now))
            trace = (Trace(None, "condition", f"segment {journey.trigger.segment or journey.id}: {when.source}", result.value, result.error),)
            if not result.value:
                continue
            if before is not None and when.evaluate(_activation(journey, {}, before, now)).value:
                continue  # already in the segment: entering is what triggers
            routes.append(Route("enroll", journey, None, "segment", trace))
    return routes


def may_enter(journey: Journey, previous: Iterable[EnrollmentState], now: dt.datetime) -> tuple[bool, str]:
    """Whether the customer may enter ``journey`` now, given their enrollments in it so far.

    ``previous`` is every enrollment of this customer in this journey (any version, any
    status). Rules, in order: at most ``entry.concurrent`` active at once (default 1);
    re-entry ``never`` refuses anyone enrolled before; ``after D`` refuses until D after
    the latest enrollment *started*; ``always`` lets them in.

    Returns:
        (True, "") or (False, the reason, for the explain log).
    """
    refused = refusal(journey, previous, now)
    return (True, "") if refused is None else (False, refused[1])


def refusal(journey: Journey, previous: Iterable[EnrollmentState], now: dt.datetime) -> tuple[str, str] | None:
    """Why the entry rules (:func:`may_enter`) keep the customer out of ``journey`` now, or None.

    Returns:
        (:data:`ENTRY_LIMIT` or :data:`REENTRY_REFUSED`, the reason in words).
    """
    earlier = list(previous)
    entry = journey.entry
    running = sum(1 for e in earlier if e.active)
    if running >= entry.concurrent:
        return ENTRY_LIMIT, f"already in {journey.id} ({running} active; at most {entry.concurrent} at once)"
    if not earlier or entry.reentry == "always":
        return None
    if entry.reentry == "never":
        return REENTRY_REFUSED, f"was in {journey.id} before and re-entry is never"
    latest = max(e.started_at for e in earlier)
    if entry.reentry == "after" and entry.reentry_after is not None:
        opens = latest + entry.reentry_after
        if now < opens:
            return REENTRY_REFUSED, f"entered {journey.id} at {latest.isoformat()}; re-entry opens at {opens.isoformat()}"
    return None


def _read(source: str, activation: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the fields ``source`` reads (None when absent), by name as written."""
    values: dict[str, Any] = {}
    for reference in field_references(source):
        value: Any = activation.get(reference.variable)
        for name in reference.fields:
            value = value.get(name) if isinstance(value, Mapping) else None
        if not (value is None or isinstance(value, (int, float, bool))):
            value = str(value)[:200]  # a long text or a whole object would bloat the record: its start says enough
        values[reference.name] = value
    return values


def _activation(journey: Journey, event: Mapping[str, Any], customer: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {
        "event": dict(event),
        "trigger": dict(event),
        "customer": customer_variable(customer),
        "context": {
            "journey": {"id": journey.id, "name": journey.name, "stage": journey.stage},
            "step": {"id": ""},
            "enrollment": {"id": "", "started_at": ""},
        },
        "now": now,
    }
