"""The state of one enrollment: where a customer is in a journey, as plain JSON-able data.

The worker stores :meth:`EnrollmentState.to_dict` in one JSON column (plus indexed copies of
``status``, ``step`` and ``wait.until``) and rebuilds it with :meth:`EnrollmentState.from_dict`;
the round trip is exact. The state is immutable: :func:`~engine.runtime.machine.advance`
returns a new one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: ``active`` while the customer is in the journey; the other three are final.
STATUSES = ("active", "completed", "converted", "exited")
FINAL_STATUSES = frozenset(STATUSES[1:])


def iso(moment: dt.datetime | None) -> str | None:
    """A datetime as ISO 8601 text (None stays None); naive datetimes are refused."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError(f"datetime {moment!r} has no time zone; the runtime only takes aware datetimes")
    return moment.isoformat()


def parse_iso(text: str | None) -> dt.datetime | None:
    """Read :func:`iso`'s output (and Segment's ``Z`` suffix) back into an aware datetime."""
    if text is None:
        return None
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Wait:
    """What an active enrollment waits for.

    Attributes:
        kind: ``timer`` (a ``wait`` step) or ``event`` (a ``wait_until`` step).
        until: when the timer is due (a ``wait``, or a ``wait_until``'s timeout); None for a
            ``wait_until`` without a timeout, which waits for its event forever.
        event: the event name a ``wait_until`` waits for.
        timer_key: the key of the timer scheduled for ``until`` (``ScheduleTimer.key``); a
            :class:`~engine.runtime.inputs.TimerFired` with another key is stale and ignored.
    """

    kind: str
    until: dt.datetime | None = None
    event: str | None = None
    timer_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"kind": self.kind, "until": iso(self.until), "event": self.event, "timer_key": self.timer_key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Wait:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kind=data["kind"],
            until=parse_iso(data.get("until")),
            event=data.get("event"),
            timer_key=data.get("timer_key"),
        )


@dataclass(frozen=True)
class EnrollmentState:
    """One customer's way through one version of one journey.

    Attributes:
        id: chosen by the caller (the worker's row id, the simulator's counter); prefixes
            every idempotency key, so it must be unique and stable.
        journey_id: the journey's id.
        version: the journey version the enrollment runs on (it stays on it).
        customer_id: the customer's id, as the caller knows it.
        status: ``active``, ``completed`` (ran off the end), ``converted`` (goal or a
            converting exit step) or ``exited`` (exit event, exit step, holdout, loop guard).
        step: the step it waits at; None once ended.
        wait: what it waits for; None once ended.
        trigger: the event that started it, Segment-shaped (``{}`` for a segment trigger).
        last_event: the latest event a ``wait_until`` received (``event`` in later steps).
        visits: how many times each step has run, by step id (the ``visit`` in keys).
        started_at: when it started.
        ended_at: when it ended, or None.
        reason: why it ended (``goal``, ``exit_on:account_deleted``, ``holdout``...).
        variant: the path chosen at each split, by split step id (``control`` for a holdout).
        audiences: the retargeting audiences this enrollment added the customer to and has not
            removed them from, each with the send step that added them: a conversion or an
            exit removes the customer from each (docs/channels.md). None in a state stored
            before audiences were tracked: the runtime then reads them from ``visits``.
    """

    id: str
    journey_id: str
    version: int
    customer_id: str
    started_at: dt.datetime
    status: str = "active"
    step: str | None = None
    wait: Wait | None = None
    trigger: Mapping[str, Any] = field(default_factory=dict)
    last_event: Mapping[str, Any] | None = None
    visits: Mapping[str, int] = field(default_factory=dict)
    ended_at: dt.datetime | None = None
    reason: str | None = None
    variant: Mapping[str, str] = field(default_factory=dict)
    audiences: Mapping[str, str] | None = None

    @property
    def active(self) -> bool:
        """True until the enrollment ends."""
        return self.status == "active"

    @property
    def holdout(self) -> bool:
        """True for a customer placed in a split's control group."""
        return self.reason == "holdout"

    def evolve(self, **changes: Any) -> EnrollmentState:
        """A copy with ``changes`` applied (the state is immutable)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; :meth:`from_dict` gives back an equal enrollment."""
        return {
            "id": self.id,
            "journey_id": self.journey_id,
            "version": self.version,
            "customer_id": self.customer_id,
            "status": self.status,
            "step": self.step,
            "wait": self.wait.to_dict() if self.wait is not None else None,
            "trigger": dict(self.trigger),
            "last_event": dict(self.last_event) if self.last_event is not None else None,
            "visits": dict(self.visits),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "reason": self.reason,
            "variant": dict(self.variant),
            "audiences": dict(self.audiences) if self.audiences is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnrollmentState:
        """Inverse of :meth:`to_dict`."""
        started_at = parse_iso(data["started_at"])
        if started_at is None:
            raise ValueError("an enrollment needs started_at")
        status = data.get("status", "active")
        if status not in STATUSES:
            raise ValueError(f"unknown enrollment status {status!r}; expected one of {', '.join(STATUSES)}")
        return cls(
            id=str(data["id"]),
            journey_id=data["journey_id"],
            version=int(data["version"]),
            customer_id=str(data["customer_id"]),
            started_at=started_at,
            status=status,
            step=data.get("step"),
            wait=Wait.from_dict(data["wait"]) if data.get("wait") is not None else None,
            trigger=dict(data.get("trigger") or {}),
            last_event=dict(data["last_event"]) if data.get("last_event") is not None else None,
            visits={str(k): int(v) for k, v in (data.get("visits") or {}).items()},
            ended_at=parse_iso(data.get("ended_at")),
            reason=data.get("reason"),
            variant=dict(data.get("variant") or {}),
            audiences={str(k): str(v) for k, v in data["audiences"].items()} if data.get("audiences") is not None else None,
        )
