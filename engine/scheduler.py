"""The scheduler process: it finds work that is due or was lost, and enqueues it.

Every second it claims the timers that are due and enqueues them on ``timers`` (long
waits are timer rows, never Dramatiq's ``delay``), at most ``TIMERS_IN_FLIGHT`` claimed
and not fired yet. Every ``JOURNEY_SWEEP_INTERVAL`` it
sweeps: events, deliveries, and timers enqueued but not fired, still pending after
``JOURNEY_SWEEP_AFTER`` and carried by no message on the broker (their message was lost:
Redis flushed, a message dead-lettered) are enqueued again; work still waiting on its
queue, however long the backlog, is left to its message, and a timer of a paused journey
to the resume (:func:`not_held_by_a_pause`). Deliveries a worker stopped
working on (``UNKNOWN_AFTER_FACTOR`` times that) are settled: claimed but never handed to
an adapter, they are pending again; stopped in the middle of their send, they are
``unknown`` for an operator, or resent if their provider deduplicates on the key. Several
schedulers may run against PostgreSQL: each claims rows with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, exists, func, select, update
from sqlalchemy.orm import InstrumentedAttribute

from channels import registry
from engine import delivery, queues
from engine.orchestrator import Followups
from engine.queues import Carried
from engine.services import Services
from engine.storage.models import Base, Delivery, Enrollment, Event, JourneyRecord, Timer
from engine.workers.actors import EVENTS_QUEUE, MAX_EVENT_ATTEMPTS, TIMERS_QUEUE, delivery_queue

log = logging.getLogger(__name__)

SWEEP_PAGE = 5000  # candidate rows read per query, in key order
# Candidate rows a sweep looks at per kind of work: a long backlog is gone through over
# several sweeps, each going on from where the last one stopped.
SWEEP_BUDGET = 20_000
TIMERS_PER_MESSAGE = 100
# Timers claimed and not fired yet, at most: each tick tops the queue up to this many
# (about two seconds of work at 5,000 timers/s) instead of claiming every due timer at
# once, so a million timers due at 9:00 are not all marked enqueued, and swept again,
# long before a worker can take them.
TIMERS_IN_FLIGHT = 10_000
TICK = 1.0  # seconds between two looks for due timers
# A delivery still "claimed" or "sending" this long after was abandoned by its worker.
UNKNOWN_AFTER_FACTOR = 5
NOTHING_CARRIED = Carried({})


@dataclass(frozen=True)
class _Work:
    """One kind of row the scheduler enqueues: which rows, on which queue, and how to send them."""

    name: str
    table: type[Base]
    key: InstrumentedAttribute[Any]  # the primary key, the order of the pages
    columns: tuple[InstrumentedAttribute[Any], ...]  # selected after the key, for ``queue`` and ``send``
    where: tuple[ColumnElement[bool], ...]
    queue: Callable[[Row[Any]], str]
    send: Callable[[list[Row[Any]]], bool]


def not_held_by_a_pause() -> ColumnElement[bool]:
    """Timers not of an enrollment of a paused or archived journey.

    Such a timer, once claimed, waits for the journey's resume, which releases it
    (:func:`engine.deploy.set_status`), instead of being swept back onto the queue every
    ``JOURNEY_SWEEP_AFTER`` for a worker that would leave it alone again. The rule of
    the scheduler's sweep and of the twin's driver loop (:func:`engine.twin.due_work`).
    """
    return ~exists().where(
        Enrollment.id == Timer.enrollment_id, JourneyRecord.id == Enrollment.journey_id, JourneyRecord.status != "active"
    )


class Scheduler:
    """Sweeps lost work back onto the queues, periodically or once."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._resume: dict[str, Any] = {}  # by kind of work: the last key the previous sweep looked at
        self.deduplicating = registry.deduplicating()  # channels whose unknown sends are resent

    def fire_due(self, now: datetime | None = None) -> int:
        """Claim the timers due by ``now`` that were never enqueued, and enqueue them; return how many."""
        now = now or self.services.clock()
        with self.services.sessions() as session:
            in_flight = session.execute(
                select(func.count()).select_from(
                    select(Timer.key)
                    .where(Timer.fired_at.is_(None), Timer.due_at <= now, Timer.enqueued_at.is_not(None), not_held_by_a_pause())
                    .limit(TIMERS_IN_FLIGHT).subquery()
                )
            ).scalar_one()
        if in_flight >= TIMERS_IN_FLIGHT:
            return 0
        return self._claim(self._timers(Timer.due_at <= now, Timer.enqueued_at.is_(None)), now, limit=TIMERS_IN_FLIGHT - in_flight)

    def sweep(self, now: datetime | None = None) -> int:
        """Enqueue again the work whose message was lost, and mark abandoned sends; return how many were enqueued.

        Lost work is a row pending longer than ``JOURNEY_SWEEP_AFTER`` that no message on the
        broker carries any more (:func:`engine.queues.carried`): events, timers enqueued
        but not fired, deliveries (and deferred deliveries whose time has come).
        """
        now = now or self.services.clock()
        settings = self.services.settings
        with self.services.sessions.begin() as session:
            abandoned = delivery.sweep_abandoned(session, now, settings.sweep_after * UNKNOWN_AFTER_FACTOR,
                                                 self.deduplicating)
        if abandoned.unknown:
            log.warning("%d deliveries were abandoned while sending; marked unknown "
                        "(see `journey deliveries unknown`)", abandoned.unknown)
        if abandoned.released:
            log.info("%d deliveries claimed by a worker that stopped were never sent; pending again",
                     abandoned.released)
        if abandoned.resent:
            log.info("%d unknown deliveries resent: their providers deduplicate on the key", abandoned.resent)
        requeued = 0
        if abandoned.requeue and self.services.dispatch(Followups(deliveries=abandoned.requeue)):
            requeued = len(abandoned.requeue)
        try:
            # Read before the rows: a worker commits a row's work before it acknowledges the
            # message, so a row still pending after its message was acknowledged is lost.
            carried = queues.carried(self.services.broker, dead_before=now - settings.sweep_after)
        except Exception:  # noqa: BLE001 - the broker being down must not end the scheduler
            log.warning("could not read the queues; lost work is swept once the broker answers", exc_info=True)
            return requeued
        cutoff = now - settings.sweep_after
        kinds = (
            _Work(
                "events", Event, Event.id, (),
                (Event.processed_at.is_(None), Event.attempts < MAX_EVENT_ATTEMPTS,
                 func.coalesce(Event.enqueued_at, Event.received_at) < cutoff),
                lambda row: EVENTS_QUEUE,
                lambda rows: self.services.enqueue_events([row.id for row in rows]),
            ),
            self._timers(Timer.due_at <= now, Timer.enqueued_at < cutoff, not_held_by_a_pause()),
            _Work(
                "deliveries", Delivery, Delivery.id, (Delivery.channel,),
                (delivery.lost_condition(now, settings.sweep_after),),
                lambda row: delivery_queue(row.channel),
                lambda rows: self.services.dispatch(Followups(deliveries=[(row.id, row.channel) for row in rows])),
            ),
        )
        return requeued + sum(self._claim(work, now, carried, SWEEP_BUDGET) for work in kinds)

    def _timers(self, *where: ColumnElement[bool]) -> _Work:
        def send(rows: list[Row[Any]]) -> bool:
            keys = [row.key for row in rows]
            return all(
                self.services.dispatch(Followups(timers=keys[i : i + TIMERS_PER_MESSAGE]))
                for i in range(0, len(keys), TIMERS_PER_MESSAGE)
            )

        return _Work("timers", Timer, Timer.key, (), (Timer.fired_at.is_(None), *where), lambda row: TIMERS_QUEUE, send)

    def _claim(self, work: _Work, now: datetime, carried: Carried = NOTHING_CARRIED, budget: int | None = None,
               limit: int | None = None) -> int:
        """Claim the rows of ``work`` no message carries, mark them enqueued at ``now``, and send them.

        Candidate rows are read page by page in key order, without locks; those a message
        still carries are left alone; the others are claimed (``FOR UPDATE SKIP LOCKED``,
        the conditions checked again) and sent. With a ``budget``, at most that many rows
        are looked at, and the next call goes on after the last of them (from the start
        once the end was reached), so every row is looked at within a few sweeps. With a
        ``limit``, at most that many rows are claimed (the first ones, in key order).

        Returns how many were sent; stops at the first batch ``send`` could not send.
        """
        after = self._resume.get(work.name) if budget is not None else None
        total = looked = 0
        while (budget is None or looked < budget) and (limit is None or total < limit):
            with self.services.sessions.begin() as session:
                size = SWEEP_PAGE if limit is None else min(SWEEP_PAGE, limit - total)
                page = select(work.key, *work.columns).where(*work.where).order_by(work.key).limit(size)
                rows = session.execute(page if after is None else page.where(work.key > after)).all()
                if not rows:
                    after = None
                    break
                looked += len(rows)
                after = rows[-1][0]
                lost = [row[0] for row in rows if not carried.carries(work.queue(row), row[0])]
                claimed = list(session.execute(
                    select(work.key, *work.columns).where(*work.where, work.key.in_(lost))
                    .order_by(work.key).with_for_update(skip_locked=True)
                ).all()) if lost else []
                if claimed:
                    session.execute(
                        update(work.table).where(work.key.in_([row[0] for row in claimed])).values(enqueued_at=now)
                    )
            if claimed:
                if not work.send(claimed):
                    break  # the broker is down: the rows are swept again after JOURNEY_SWEEP_AFTER
                total += len(claimed)
        if budget is not None:
            self._resume[work.name] = after
        if total and budget is not None:
            log.info("swept %d pending %s back onto their queues", total, work.name)
        return total

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


__all__ = ["Scheduler", "not_held_by_a_pause", "pending_events"]
