"""The scheduler process: it finds work that is due or was lost, and enqueues it.

For now it runs the sweeper: events committed but still unprocessed after
``JOURNEY_SWEEP_AFTER`` (their queue message was lost: a worker killed, Redis flushed)
are enqueued again. Several schedulers may run against PostgreSQL: each claims rows
with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from sqlalchemy import func, select, update

from engine.services import Services
from engine.storage.models import Event
from engine.workers.actors import MAX_EVENT_ATTEMPTS

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000


class Scheduler:
    """Sweeps lost work back onto the queues, periodically or once."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def sweep(self, now: datetime | None = None) -> int:
        """Enqueue events pending longer than the threshold; return how many were sent."""
        now = now or datetime.now(timezone.utc)
        cutoff = now - self.services.settings.sweep_after
        total = 0
        while True:
            with self.services.sessions.begin() as session:
                ids = list(
                    session.execute(
                        select(Event.id)
                        .where(
                            Event.processed_at.is_(None),
                            Event.attempts < MAX_EVENT_ATTEMPTS,
                            func.coalesce(Event.enqueued_at, Event.received_at) < cutoff,
                        )
                        .order_by(Event.id)
                        .limit(SWEEP_BATCH)
                        .with_for_update(skip_locked=True)
                    ).scalars()
                )
                if not ids:
                    return total
                session.execute(update(Event).where(Event.id.in_(ids)).values(enqueued_at=now))
            if not self.services.enqueue_events(ids):
                return total  # the broker is down: the rows stay pending for the next sweep
            total += len(ids)
            log.info("swept %d pending events back onto the queue", len(ids))

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``JOURNEY_SWEEP_INTERVAL`` until ``stop`` is set."""
        interval = self.services.settings.sweep_interval.total_seconds()
        while not stop.is_set():
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a database blip must not end the scheduler
                log.exception("sweep failed; retrying in %ss", interval)
            stop.wait(interval)


def pending_events(services: Services) -> int:
    """Return how many stored events are not processed yet."""
    with services.sessions() as session:
        return session.execute(
            select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
        ).scalar_one()


__all__ = ["Scheduler", "pending_events"]
