"""Helpers for the state machine tests: journeys from YAML text, customers, events, a clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from engine.definitions import Journey, load_text

ROOT = Path(__file__).parents[3]
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)  # a Wednesday, noon UTC

HEADER = """\
id: test_journey
name: Test journey
stage: consideration
trigger:
  event: checkout_started
sample:
  customer: {first_name: Ada, tier: silver}
  events:
    checkout_started:
      properties: {cart_value: 120, order_id: o-1, referral_code: ADA-1, currency: EUR, item_count: 2}
    order_completed:
      properties: {order_id: o-1, total: 10}
    product_viewed:
      properties: {product_id: p-1}
"""


def journey(text: str) -> Journey:
    """A journey from YAML: HEADER, then ``text`` (which may add goal, exit_on, entry...)."""
    body = text if text.startswith("id:") else HEADER + text
    return load_text(body, filename="journeys/test_journey.yaml", templates=ROOT / "journeys" / "templates")


def customer(cid: str = "c-1", stage: str | None = None, points: int = 0, timezone: str = "UTC", **traits: Any) -> dict[str, Any]:
    """The runtime's customer view."""
    return {"id": cid, "traits": {"first_name": "Ada", **traits}, "stage": stage, "points": points, "timezone": timezone}


def event(name: str, at: dt.datetime = T0, user: str = "c-1", **properties: Any) -> dict[str, Any]:
    """A Segment track event."""
    return {
        "type": "track",
        "event": name,
        "userId": user,
        "messageId": f"m-{name}-{at.isoformat()}",
        "timestamp": at.isoformat(),
        "properties": properties,
        "context": {},
    }


def hours(n: float) -> dt.timedelta:
    return dt.timedelta(hours=n)


def checkout() -> dict[str, Any]:
    """The trigger event of HEADER's journey."""
    return event("checkout_started", cart_value=120, order_id="o-1", referral_code="ADA-1")
