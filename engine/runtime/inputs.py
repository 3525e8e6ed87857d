"""What wakes an enrollment: an event, or one of its timers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventArrived:
    """A Segment-shaped event of the enrollment's customer (``type``, ``event``, ``properties``,
    ``timestamp``...), for a ``wait_until``, the goal or an exit event."""

    event: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"type": "event", "event": dict(self.event)}


@dataclass(frozen=True)
class TimerFired:
    """The timer scheduled with ``ScheduleTimer(key=timer_key)`` is due."""

    timer_key: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"type": "timer", "timer_key": self.timer_key}


Input = EventArrived | TimerFired


def input_from_dict(data: Mapping[str, Any]) -> Input:
    """Inverse of ``to_dict``.

    Raises:
        ValueError: ``type`` is neither ``event`` nor ``timer``.
    """
    if data.get("type") == "event":
        return EventArrived(dict(data.get("event") or {}))
    if data.get("type") == "timer":
        return TimerFired(str(data["timer_key"]))
    raise ValueError(f"unknown input type {data.get('type')!r}; expected 'event' or 'timer'")
