"""The scheduler process: it finds work that is due or was lost, and enqueues it.

Every second it claims the timers that are due and enqueues them on ``timers`` (long
waits are timer rows, never Dramatiq's ``delay``). Every ``JOURNEY_SWEEP_INTERVAL`` it
sweeps: events and deliveries still pending after ``JOURNEY_SWEEP_AFTER`` (their queue
message was lost: a worker killed, Redis flushed) are enqueued again, timers enqueued
but not fired by then are enqueued again. Deliveries a worker stopped working on
(``UNKNOWN_AFTER_FACTOR`` times that) are settled: claimed but never handed to an
adapter, they are pending again; stopped in the middle of their send, they are
``unknown`` for an operator, or resent if their provider deduplicates on the key. Several schedulers may run against
PostgreSQL: each claims rows with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Select, Update, bindparam, func, select, update

from channels import registry
from engine.delivery import sweep_abandoned, sweep_deliveries
from engine.orchestrator import Followups
from engine.services import Services
from engine.storage.models import Event, Timer
from engine.workers.actors import MAX_EVENT_ATTEMPTS

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000
TIMER_BATCH = 1000
TICK = 1.0  # seconds between two looks for due timers
# A delivery still "claimed" or "sending" this long after was abandoned by its worker.
UNKNOWN_AFTER_FACTOR = 5


class Scheduler:
    """Sweeps lost work back onto the queues, periodically or once."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.deduplicating = registry.deduplicating()  # channels whose unknown sends are resent

    def fire_due(self, now: datetime | None = None) -> int:
        """Claim the timers due by ``now`` and enqueue them; return how many.

        A claimed timer is enqueued again only if it has not fired ``JOURNEY_SWEEP_AFTER``
        after its last enqueue (its message was lost).
        """
        now = now or datetime.now(timezone.utc)
        cutoff = now - self.services.settings.sweep_after
        due = (
            select(Timer.key)
            .where(
                Timer.fired_at.is_(None),
                Timer.due_at <= now,
                (Timer.enqueued_at.is_(None)) | (Timer.enqueued_at < cutoff),
            )
            .order_by(Timer.due_at)
            .limit(TIMER_BATCH)
            .with_for_update(skip_locked=True)
        )

        def send(keys: list[str]) -> bool:
            return all(self.services.dispatch(Followups(timers=keys[i : i + 100])) for i in range(0, len(keys), 100))

        return self._claim(due, update(Timer).where(Timer.key.in_(bindparam("ids", expanding=True))), now, send)

    def sweep(self, now: datetime | None = None) -> int:
        """Enqueue events and deliveries pending longer than the threshold; return how many."""
        now = now or datetime.now(timezone.utc)
        total = self._sweep_events(now)
        settings = self.services.settings
        with self.services.sessions.begin() as session:
            lost = sweep_deliveries(session, now, settings.sweep_after)
            abandoned = sweep_abandoned(session, now, settings.sweep_after * UNKNOWN_AFTER_FACTOR, self.deduplicating)
        if abandoned.unknown:
            log.warning("%d deliveries were abandoned while sending; marked unknown "
                        "(see `journey deliveries unknown`)", abandoned.unknown)
        if abandoned.released:
            log.info("%d deliveries claimed by a worker that stopped were never sent; pending again",
                     abandoned.released)
        if abandoned.resent:
            log.info("%d unknown deliveries resent: their providers deduplicate on the key", abandoned.resent)
        if lost and self.services.dispatch(Followups(deliveries=lost)):
            log.info("swept %d pending deliveries back onto their queues", len(lost))
            total += len(lost)
        if abandoned.requeue and self.services.dispatch(Followups(deliveries=abandoned.requeue)):
            total += len(abandoned.requeue)
        return total

    def _sweep_events(self, now: datetime) -> int:
        cutoff = now - self.services.settings.sweep_after
        lost = (
            select(Event.id)
            .where(
                Event.processed_at.is_(None),
                Event.attempts < MAX_EVENT_ATTEMPTS,
                func.coalesce(Event.enqueued_at, Event.received_at) < cutoff,
            )
            .order_by(Event.id)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )

        def send(ids: list[int]) -> bool:
            if not self.services.enqueue_events(ids):
                return False  # the broker is down: the rows stay pending for the next sweep
            log.info("swept %d pending events back onto the queue", len(ids))
            return True

        return self._claim(lost, update(Event).where(Event.id.in_(bindparam("ids", expanding=True))), now, send)

    def _claim(self, query: Select[Any], mark: Update, now: datetime, send: Callable[[list[Any]], bool]) -> int:
        """Claim rows batch by batch (``query``, then ``mark`` them enqueued at ``now``) and ``send`` them.

        Returns how many were sent; stops at the first batch ``send`` could not send.
        """
        total = 0
        while True:
            with self.services.sessions.begin() as session:
                ids = list(session.execute(query).scalars())
                if not ids:
                    return total
                session.execute(mark.values(enqueued_at=now), {"ids": ids})
            if not send(ids):
                return total
            total += len(ids)

    def run(self, stop: threading.Event) -> None:
        """Fire due timers every second and sweep every ``JOURNEY_SWEEP_INTERVAL``, until ``stop``."""
        interval = self.services.settings.sweep_interval.total_seconds()
        next_sweep = 0.0
        while not stop.is_set():
            try:
                self.fire_due()
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + interval
            except Exception:  # noqa: BLE001 - a database blip must not end the scheduler
                log.exception("scheduler round failed; retrying")
            stop.wait(TICK)


def pending_events(services: Services) -> int:
    """Return how many stored events are not processed yet."""
    with services.sessions() as session:
        return session.execute(
            select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
        ).scalar_one()


__all__ = ["Scheduler", "pending_events"]
