"""The sample data a journey is checked against: what its conditions and templates may read."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

SAMPLE_TIME = "2024-01-01T09:00:00Z"

#: The fields every customer has at run time (engine.runtime.machine.customer_variable adds them
#: to the traits; ``email`` and ``phone`` are null for a customer without one). Any other trait
#: may be missing: a new customer has only what the app sent.
CUSTOMER_FIELDS = ("id", "email", "phone", "timezone", "stage", "points")


def sample_customer(declared: Mapping[str, Any], stage: str, extra_traits: Mapping[str, Any]) -> dict[str, Any]:
    """The sample customer: the fields every customer has, then the journey's sample traits."""
    customer: dict[str, Any] = {
        "id": "sample-customer",
        "email": "sample@example.com",
        "phone": "+15555550100",
        "timezone": "UTC",
        "stage": stage,
        "points": 0,
    }
    customer.update(extra_traits)
    customer.update(copy.deepcopy(dict(declared)))
    return customer


def sample_event(name: str, declared: Mapping[str, Mapping[str, Any]], customer_id: str) -> dict[str, Any]:
    """A Segment track event named ``name``: the standard fields, then the journey's sample."""
    event: dict[str, Any] = {
        "type": "track",
        "event": name,
        "userId": customer_id,
        "messageId": f"sample-{name}",
        "timestamp": SAMPLE_TIME,
        "properties": {},
        "context": {},
    }
    given = copy.deepcopy(dict(declared.get(name, {})))
    for key in ("properties", "context"):
        if isinstance(given.get(key), Mapping):
            event[key].update(given.pop(key))
    event.update(given)
    return event


def sample_context(journey_id: str, name: str, stage: str, step_id: str | None) -> dict[str, Any]:
    """The ``context`` variable: the journey, the step and the enrollment."""
    return {
        "journey": {"id": journey_id, "name": name, "stage": stage},
        "step": {"id": step_id or ""},
        "enrollment": {"id": "sample-enrollment", "started_at": SAMPLE_TIME},
    }
