"""The Dramatiq actors that carry out the engine's work.

Actors are declared on the broker of one :class:`~engine.services.Services`, with the
services bound in, rather than on dramatiq's global broker at import time. A message
carries only ids: the database row is the work, the message is a nudge to do it.

Queues: ``events`` (ingested events), ``timers`` (due timers), and one queue per channel,
``deliveries.<channel>``, so a slow provider holds back only its own channel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import dramatiq
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from engine import profiles
from engine.delivery import MAX_ATTEMPTS as MAX_DELIVERY_ATTEMPTS
from engine.orchestrator import MAX_EVENT_ATTEMPTS, Followups
from engine.storage.models import Event
from engine.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from engine.services import Services

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
TIMERS_QUEUE = "timers"
DELIVERIES_QUEUE = "deliveries"  # + ".<channel>"
# Within a worker, prefetched messages run lowest number first: work already decided
# (a delivery, a due timer) goes before new events, so a burst of events does not hold
# back the messages they caused.
PRIORITY_DELIVERIES = 0
PRIORITY_TIMERS = 10
PRIORITY_EVENTS = 20


def delivery_queue(channel: str) -> str:
    """The queue of one channel's deliveries."""
    return f"{DELIVERIES_QUEUE}.{channel}"


def queue_names(channels: Iterable[str]) -> list[str]:
    """Every queue of an engine with these channels: events, timers, one per channel."""
    return [EVENTS_QUEUE, TIMERS_QUEUE, *(delivery_queue(channel) for channel in channels)]


class EventsFailed(Exception):
    """Some events of a message failed; the message is retried for them."""


@dataclass(frozen=True)
class Actors:
    """The actors declared for one engine."""

    process_events: dramatiq.Actor
    fire_timers: dramatiq.Actor
    deliver: dramatiq.Actor


def declare(services: Services) -> Actors:
    """Declare the engine's actors on ``services.broker`` and return them."""

    def process_events(event_ids: list[int]) -> None:
        failed = apply_events(services, event_ids)
        if failed:
            raise EventsFailed(f"events {failed} failed; see their error column")

    def fire_timers(keys: list[str]) -> None:
        fire_timers_together(services, keys)

    def deliver(delivery_ids: list[int] | int) -> None:
        ids = [delivery_ids] if isinstance(delivery_ids, int) else delivery_ids  # messages of before batches
        outcomes = services.deliverer.deliver_many(ids, services.clock)
        retries: dict[tuple[str, float], list[int]] = {}
        for delivery_id, outcome in outcomes.items():
            if outcome.retry_in is not None and outcome.channel is not None:
                retries.setdefault((outcome.channel, outcome.retry_in), []).append(delivery_id)
        for (channel, delay), retry_ids in retries.items():
            # The rows are pending again, committed: a lost retry message is swept up.
            message = services.actors.deliver.message(retry_ids).copy(queue_name=delivery_queue(channel))
            services.broker.enqueue(message, delay=int(delay * 1000))

    broker = services.broker
    return Actors(
        process_events=dramatiq.actor(
            broker=broker, actor_name="process_events", queue_name=EVENTS_QUEUE,
            max_retries=MAX_EVENT_ATTEMPTS - 1, min_backoff=500, max_backoff=60_000, priority=PRIORITY_EVENTS,
        )(process_events),
        fire_timers=dramatiq.actor(
            broker=broker, actor_name="fire_timers", queue_name=TIMERS_QUEUE,
            max_retries=MAX_EVENT_ATTEMPTS - 1, min_backoff=500, max_backoff=60_000, priority=PRIORITY_TIMERS,
        )(fire_timers),
        deliver=dramatiq.actor(
            broker=broker, actor_name="deliver", queue_name=delivery_queue("log"),
            max_retries=MAX_DELIVERY_ATTEMPTS, min_backoff=1_000, max_backoff=300_000, priority=PRIORITY_DELIVERIES,
        )(deliver),
    )


def relax_commit(session: Session) -> None:
    """Let this transaction's commit return before PostgreSQL flushed it to disk.

    Safe for applying an event or a timer, and only for that: the input row stays
    pending in the same transaction, so a commit lost in a database crash is lost whole
    and redone by the sweeper. And nothing can act on what it wrote before it is
    durable: a delivery is sent only after its claim commits synchronously, and
    PostgreSQL flushes the log in order, so that flush makes this commit durable too.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def applied_at(event: Event, now: datetime) -> datetime:
    """The instant an event is applied at: now, or its ``received_at`` if that is later.

    In a worker now is always the later one. The twin (``journey replay``) applies a batch
    of stored events at its first one's instant, and each of them then at its own.
    """
    return max(now, event.received_at)


def apply_events(services: Services, event_ids: list[int]) -> list[int]:
    """Apply stored events, all in one transaction if they can be; return the ids that failed.

    A message's events are applied together: one transaction, the identities of all of
    them locked up front in one global order, then their customers by id, then those
    customers' enrollments (the engine's lock order, docs/operations.md "Locks", which
    timers and deliveries follow too, so transactions that share customers take turns
    instead of deadlocking); their customers, points, enrollments loaded in a few
    queries and the rows they cause inserted a statement per table, through one
    :class:`~engine.unit_of_work.UnitOfWork`. Each event is applied at the later of now
    and its ``received_at`` (:func:`applied_at`; in a worker now is always the later
    one). If anything in the batch fails, it is
    rolled back whole and each event is applied alone (:func:`process_event`, a unit
    of one), so one bad event fails only itself.
    """
    now = services.clock()
    try:
        with services.sessions.begin() as session:
            relax_commit(session)
            events = list(
                session.execute(
                    select(Event)
                    .where(Event.id.in_(event_ids), Event.processed_at.is_(None))
                    .order_by(Event.id)
                    .with_for_update()
                ).scalars()
            )
            followups = _apply(services, UnitOfWork(session), events, now)
    except Exception:  # noqa: BLE001 - retried one by one below, which records the culprit
        log.warning("a batch of %d events failed; applying them one by one", len(event_ids), exc_info=True)
    else:
        services.dispatch(followups)
        return []
    return [event_id for event_id in event_ids if not process_event(services, event_id)]


def _apply(services: Services, unit: UnitOfWork, events: Sequence[Event], now: datetime) -> Followups:
    """Apply ``events`` (locked, not processed) in ``unit``; the messages to send after the commit."""
    session = unit.session
    # The lock order: events, identities, customers (preload), enrollments (begin).
    profiles.lock_identities(session, *(i for e in events for i in (e.user_id, e.anonymous_id, e.previous_id)))
    customers = profiles.preload(unit, events)
    orchestrator = services.orchestrator
    orchestrator.begin(unit, events, customers)
    for event in events:
        at = applied_at(event, now)
        customer, traits_before = profiles.apply_event(unit, event, at, locked=True)
        orchestrator.on_event(unit, event, customer, at, traits_before)
    return orchestrator.finish(unit)


def process_event(services: Services, event_id: int) -> bool:
    """Apply one stored event in its own transaction (a unit of one); return False if it failed.

    Profile, enrollments, timers, deliveries and the event's ``processed_at`` commit
    together; the queue messages for what it caused are sent after the commit.
    Processing twice changes nothing the second time: an event already processed is
    skipped, and the row lock makes two workers take turns.
    """
    now = services.clock()
    try:
        with services.sessions.begin() as session:
            relax_commit(session)
            event = session.execute(
                select(Event).where(Event.id == event_id).with_for_update()
            ).scalar_one_or_none()
            if event is None or event.processed_at is not None:
                return True
            followups = _apply(services, UnitOfWork(session), [event], now)
    except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
        log.exception("event %s failed", event_id)
        with services.sessions.begin() as session:
            session.execute(
                update(Event)
                .where(Event.id == event_id)
                .values(attempts=Event.attempts + 1, error=f"{type(exc).__name__}: {exc}"[:1000])
            )
        return False
    services.dispatch(followups)
    return True


def fire_timers_together(services: Services, keys: list[str]) -> None:
    """Fire due timers in one transaction, their inserts held to the end as for events.

    Their customers, enrollments and the timers are locked up front, in the engine's
    lock order (:meth:`~engine.orchestrator.Orchestrator.on_timers`). If the batch fails,
    it is rolled back and each timer fired alone; one that fails again raises, so the
    message is retried (firing is idempotent: the others are done).
    """
    now = services.clock()
    try:
        with services.sessions.begin() as session:
            relax_commit(session)
            followups = _fire(services, UnitOfWork(session), keys, now)
    except Exception:  # noqa: BLE001 - fired one by one below, which raises for the culprit
        log.warning("a batch of %d timers failed; firing them one by one", len(keys), exc_info=True)
        errors: list[Exception] = []
        for key in keys:
            try:
                fire_timer(services, key)
            except Exception as exc:  # noqa: BLE001 - the others still fire; raised below
                errors.append(exc)
        if errors:
            raise errors[0] from None  # the batch's error is logged above
        return
    services.dispatch(followups)


def fire_timer(services: Services, key: str) -> None:
    """Fire one timer in its own transaction (a unit of one), then send what it caused."""
    now = services.clock()
    with services.sessions.begin() as session:
        relax_commit(session)
        followups = _fire(services, UnitOfWork(session), [key], now)
    services.dispatch(followups)


def _fire(services: Services, unit: UnitOfWork, keys: Sequence[str], now: datetime) -> Followups:
    """Fire the timers ``keys`` in ``unit``; the messages to send after the commit."""
    orchestrator = services.orchestrator
    orchestrator.begin(unit, [], [])
    orchestrator.on_timers(unit, keys, now)
    return orchestrator.finish(unit)


__all__ = [
    "Actors", "Followups", "applied_at", "apply_events", "declare", "delivery_queue", "fire_timer", "fire_timers_together",
    "process_event", "queue_names",
]
