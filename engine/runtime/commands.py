"""What the runtime asks the world to do, and the trace of how it decided.

Every command carries ``key``, its idempotency key, and ``step``, the step that emitted it.
Keys are derived from (enrollment, step, visit) and nothing else, so running the same
input twice gives the same keys and a unique constraint makes the second attempt a no-op:

==========================================  ===========================================
``{enrollment}:{step}:{visit}``             the step's own effect: Send, ScheduleTimer,
                                            UpdateProfile, AwardPoints, IssueReferral
``{enrollment}:{step}:{visit}:stage``       a SetStage from a step's ``stage`` (or
                                            ``update.stage``)
``{enrollment}:enter``                      the SetStage of entering the journey
``{enrollment}:exit``                       the Exit (an enrollment ends once)
``{enrollment}:leave:{audience}``           the Send that removes the customer from an
                                            audience when the enrollment converts or exits
==========================================  ===========================================

``CancelTimer.key`` is the key of the timer to cancel (a ``ScheduleTimer.key``): cancelling
twice is naturally harmless. ``visit`` counts from 1 per step, so a step run again in a
loop gets new keys and really sends again.

Commands are JSON-able: :func:`command_to_dict` / :func:`command_from_dict`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from engine.runtime.state import iso, parse_iso


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of every command: its idempotency key and the step that emitted it."""

    type: ClassVar[str] = ""
    key: str
    step: str | None


@dataclass(frozen=True, kw_only=True)
class Send(Command):
    """Deliver a message. Not rendered: the delivery worker renders it (see :func:`render_send`).

    Attributes:
        channel: ``email``, ``sms``, ``push``, ``webhook``, ``retargeting``, ``log``...
        template: the template's name, or None for inline parts.
        content: the step's ``parts`` (part names), ``url``, ``audience``, ``action``.
        topic: the journey's subscription topic, for consent.
        kind: ``marketing`` or ``transactional``: the step's ``kind``, else the journey's
            ``policy.kind``. The delivery row keeps it, and the policy reads it there.
        variables: what the render needs besides ``customer`` and ``now`` (which the
            delivery worker fills at send time): ``trigger``, ``event`` and ``context``.
    """

    type: ClassVar[str] = "send"
    channel: str
    template: str | None = None
    content: Mapping[str, Any] = field(default_factory=dict)
    topic: str | None = None
    kind: str = "marketing"
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ScheduleTimer(Command):
    """Wake the enrollment at ``at`` with ``TimerFired(key)``."""

    type: ClassVar[str] = "schedule_timer"
    at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class CancelTimer(Command):
    """Drop the timer whose ``ScheduleTimer.key`` is ``key`` (it would be stale anyway)."""

    type: ClassVar[str] = "cancel_timer"


@dataclass(frozen=True, kw_only=True)
class UpdateProfile(Command):
    """Merge ``traits`` into the customer's traits."""

    type: ClassVar[str] = "update_profile"
    traits: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class SetStage(Command):
    """Move the customer to lifecycle ``stage`` and record it in the history with ``reason``."""

    type: ClassVar[str] = "set_stage"
    stage: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AwardPoints(Command):
    """Add ``amount`` points to a ledger.

    Attributes:
        to: ``customer``, or ``referrer``: the owner of ``referral_code`` (taken from the
            event's or trigger's ``properties.referral_code``, else the ``referred_by``
            trait); no code, or no owner, means nobody gets points (the worker records why).
    """

    type: ClassVar[str] = "award_points"
    amount: int
    reason: str | None = None
    to: str = "customer"
    referral_code: str | None = None


@dataclass(frozen=True, kw_only=True)
class IssueReferral(Command):
    """Record ``code`` as the customer's referral code in ``program`` and set trait ``store_as`` to it.

    The code is derived from customer and program (see :func:`referral_code`), or is the
    one the customer already has, so issuing twice gives the same code.
    """

    type: ClassVar[str] = "issue_referral"
    program: str
    code: str
    store_as: str


@dataclass(frozen=True, kw_only=True)
class Exit(Command):
    """The enrollment ended with ``status`` (completed, converted, exited) because of ``reason``."""

    type: ClassVar[str] = "exit"
    status: str
    reason: str


COMMAND_TYPES: dict[str, type[Command]] = {
    cls.type: cls for cls in (Send, ScheduleTimer, CancelTimer, UpdateProfile, SetStage, AwardPoints, IssueReferral, Exit)
}


def command_to_dict(command: Command) -> dict[str, Any]:
    """A JSON-able dict with a ``type`` field; datetimes as ISO text."""
    data: dict[str, Any] = {"type": command.type}
    for name, value in asdict(command).items():
        data[name] = iso(value) if isinstance(value, dt.datetime) else value
    return data


def command_from_dict(data: Mapping[str, Any]) -> Command:
    """Inverse of :func:`command_to_dict`.

    Raises:
        ValueError: ``type`` names no command.
    """
    cls = COMMAND_TYPES.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown command type {data.get('type')!r}; expected one of {', '.join(COMMAND_TYPES)}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = parse_iso(data[f.name]) if f.name == "at" else data[f.name]
    return cls(**values)


@dataclass(frozen=True)
class Trace:
    """One thing the runtime did or decided, for ``journey trace`` and the simulator.

    Attributes:
        step: the step (None for enrollment-level entries such as a goal event).
        what: ``enter``, ``run``, ``condition``, ``choose``, ``wait``, ``resume``, ``timeout``,
            ``goal``, ``exit_on``, ``ignore``, ``end``...
        detail: a sentence for people, e.g. the condition's source.
        value: the condition's value, the path chosen, the amount...
        error: why a condition failed at run time (it then counts as false).
    """

    step: str | None
    what: str
    detail: str = ""
    value: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``value`` must already be JSON-able, as the runtime makes it)."""
        return {"step": self.step, "what": self.what, "detail": self.detail, "value": self.value, "error": self.error}
