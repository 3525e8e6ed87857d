"""The Dramatiq actors that carry out the engine's work.

Actors are declared on the broker of one :class:`~engine.services.Services`, with the
services bound in, rather than on dramatiq's global broker at import time. A message
carries only ids: the database row is the work, the message is a nudge to do it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import dramatiq
from sqlalchemy import select, update

from engine import profiles
from engine.storage.models import Event

if TYPE_CHECKING:
    from engine.services import Services

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
# After this many failed attempts an event is left for an operator (it keeps its error).
MAX_EVENT_ATTEMPTS = 5


class EventsFailed(Exception):
    """Some events of a message failed; the message is retried for them."""


@dataclass(frozen=True)
class Actors:
    """The actors declared for one engine."""

    process_events: dramatiq.Actor


def declare(services: Services) -> Actors:
    """Declare the engine's actors on ``services.broker`` and return them."""

    def process_events(event_ids: list[int]) -> None:
        failed = [event_id for event_id in event_ids if not process_event(services, event_id)]
        if failed:
            raise EventsFailed(f"events {failed} failed; see their error column")

    return Actors(
        process_events=dramatiq.actor(
            process_events,
            broker=services.broker,
            actor_name="process_events",
            queue_name=EVENTS_QUEUE,
            max_retries=MAX_EVENT_ATTEMPTS - 1,
            min_backoff=500,
            max_backoff=60_000,
        ),
    )


def process_event(services: Services, event_id: int) -> bool:
    """Apply one stored event in its own transaction; return False if it failed.

    Processing twice changes nothing the second time: an event already processed is
    skipped, and the row lock makes two workers take turns.
    """
    now = datetime.now(timezone.utc)
    try:
        with services.sessions.begin() as session:
            event = session.execute(
                select(Event).where(Event.id == event_id).with_for_update()
            ).scalar_one_or_none()
            if event is None or event.processed_at is not None:
                return True
            profiles.apply_event(session, event, now)
        return True
    except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
        log.exception("event %s failed", event_id)
        with services.sessions.begin() as session:
            session.execute(
                update(Event)
                .where(Event.id == event_id)
                .values(attempts=Event.attempts + 1, error=f"{type(exc).__name__}: {exc}"[:1000])
            )
        return False
