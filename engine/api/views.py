"""Read views the admin API returns, shaped as plain JSON-ready dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import profiles
from engine.storage.models import Event
from engine.trace import explain_customer

LATEST_EVENTS = 50


def customer_view(session: Session, ident: str) -> dict[str, Any] | None:
    """Return the profile of the customer known by ``ident``, or None if nobody is.

    ``journeys`` holds every enrollment with its trace and deliveries, as
    :func:`engine.trace.explain` gives them.
    """
    customer = profiles.find(session, ident)
    if customer is None:
        return None
    explanation = explain_customer(session, customer)
    events = session.execute(
        select(Event)
        .where(Event.customer_id == customer.id)
        .order_by(Event.timestamp.desc(), Event.id.desc())
        .limit(LATEST_EVENTS)
    ).scalars()
    return {
        "id": customer.id,
        "userId": customer.external_id,
        "anonymousIds": explanation["anonymousIds"],
        "traits": customer.traits,
        "timezone": customer.timezone,
        "stage": customer.stage,
        "stageHistory": explanation["stageHistory"],
        "firstSeenAt": _iso(customer.first_seen_at),
        "lastSeenAt": _iso(customer.last_seen_at),
        "events": [
            {
                "messageId": e.message_id,
                "type": e.type,
                "event": e.event,
                "name": e.name,
                "properties": e.properties,
                "traits": e.traits,
                "timestamp": _iso(e.timestamp),
                "receivedAt": _iso(e.received_at),
                "processedAt": _iso(e.processed_at),
            }
            for e in events
        ],
        "journeys": explanation["journeys"],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
