"""What is waiting where: broker queue depths and the database's backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.storage.models import Delivery, Event, Timer


@dataclass(frozen=True)
class QueueDepth:
    """Messages of one queue: ready to run, delayed (retry backoff), in flight, dead."""

    name: str
    ready: int
    delayed: int
    in_flight: int
    dead: int


def queue_depths(broker: dramatiq.Broker) -> list[QueueDepth]:
    """Return the depth of every queue the broker knows, sorted by name.

    A queue's delay queue (``NAME.DQ``: retries waiting for their backoff, messages sent
    with a delay) is counted as the queue's ``delayed`` messages, not as a queue of its own.
    """
    if isinstance(broker, RedisBroker):
        return _redis_depths(broker)
    if isinstance(broker, StubBroker):
        depths = []
        for name in sorted(n for n in broker.queues if not n.endswith((".DQ", ".XQ"))):
            queue = broker.queues[name]
            ready = queue.qsize()
            # A worker takes delayed messages off the DQ and holds them until they are due;
            # they stay unfinished there until moved to the queue itself.
            delay_queue = broker.queues.get(dq_name(name))
            delayed = delay_queue.unfinished_tasks if delay_queue is not None else 0
            dead = len(broker.dead_letters_by_queue.get(name, ()))
            depths.append(QueueDepth(name, ready, delayed, max(queue.unfinished_tasks - ready, 0), dead))
        return depths
    return [QueueDepth(name, 0, 0, 0, 0) for name in sorted(broker.get_declared_queues())]


def _redis_depths(broker: RedisBroker) -> list[QueueDepth]:
    # Dramatiq's keys (see dramatiq/brokers/redis/dispatch.lua): NS:Q (a list of ready
    # message ids), NS:Q.msgs (every message not yet acknowledged: ready or taken by a
    # worker), NS:Q.DQ.msgs (delayed), NS:Q.XQ (a sorted set of dead ids).
    client, ns = broker.client, broker.namespace
    prefix = _glob_escape(ns) + ":"
    names = {n for n in broker.get_declared_queues() if not n.endswith((".DQ", ".XQ"))}
    # Queues declared by other processes (a delivery queue per channel) are found by their keys.
    for key in client.scan_iter(f"{prefix}*.msgs"):
        name = key.decode().removeprefix(f"{ns}:").removesuffix(".msgs").removesuffix(".XQ").removesuffix(".DQ")
        if not name.startswith("__"):
            names.add(name)
    ordered = sorted(names)
    # One snapshot of every queue (MULTI/EXEC): read one key at a time, a message moving on
    # between two reads (taken by a worker, or acknowledged after it enqueued the work it
    # caused) was counted nowhere, and "every queue is empty" could be read while it was not.
    with client.pipeline(transaction=True) as pipe:
        for name in ordered:
            pipe.llen(f"{ns}:{name}")
            pipe.hlen(f"{ns}:{name}.msgs")
            pipe.hlen(f"{ns}:{dq_name(name)}.msgs")
            pipe.zcard(f"{ns}:{name}.XQ")
        counts = pipe.execute()
    depths = []
    for index, name in enumerate(ordered):
        ready, unacknowledged, delayed, dead = counts[4 * index : 4 * index + 4]
        depths.append(QueueDepth(name, ready=ready, delayed=delayed, in_flight=max(unacknowledged - ready, 0), dead=dead))
    return depths


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True)
class Backlog:
    """Work the database holds that is not done yet."""

    events_pending: int
    events_failing: int
    timers_due: int
    scheduler_lag_seconds: float
    deliveries: dict[str, int]


def backlog(session: Session, now: datetime) -> Backlog:
    """Count pending events, due timers (and how late the oldest is), deliveries by status."""
    pending, failing = session.execute(
        select(func.count(), func.count().filter(Event.attempts > 0)).where(Event.processed_at.is_(None))
    ).one()
    due, oldest = session.execute(
        select(func.count(), func.min(Timer.due_at)).where(Timer.fired_at.is_(None), Timer.due_at <= now)
    ).one()
    if isinstance(oldest, datetime) and oldest.tzinfo is None:  # SQLite aggregates lose the type
        oldest = oldest.replace(tzinfo=now.tzinfo)
    elif isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=now.tzinfo)
    lag = (now - oldest).total_seconds() if oldest is not None else 0.0
    deliveries = dict(session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
    return Backlog(pending, failing, due, lag, deliveries)
