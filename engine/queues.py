"""What is waiting where: broker queue depths and the database's backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
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
    """Return the depth of every queue the broker knows, sorted by name."""
    if isinstance(broker, RedisBroker):
        return _redis_depths(broker)
    if isinstance(broker, StubBroker):
        depths = []
        for name in sorted(n for n in broker.queues if not n.endswith((".DQ", ".XQ"))):
            ready = broker.queues[name].qsize()
            delayed = broker.queues[f"{name}.DQ"].qsize() if f"{name}.DQ" in broker.queues else 0
            unfinished = broker.queues[name].unfinished_tasks
            depths.append(QueueDepth(name, ready, delayed, max(unfinished - ready, 0), len(broker.dead_letters_by_queue[name])))
        return depths
    return [QueueDepth(name, 0, 0, 0, 0) for name in sorted(broker.get_declared_queues())]


def _redis_depths(broker: RedisBroker) -> list[QueueDepth]:
    client, ns = broker.client, broker.namespace
    names = {n for n in broker.get_declared_queues() if not n.endswith((".DQ", ".XQ"))}
    for key in client.scan_iter(f"{ns}:*.msgs"):
        name = key.decode().removeprefix(f"{ns}:").removesuffix(".msgs")
        if not name.endswith((".DQ", ".XQ", ".DQ.XQ")):
            names.add(name)
    depths = []
    for name in sorted(names):
        in_flight = sum(client.scard(key) for key in client.scan_iter(f"{ns}:__acks__.*.{name}"))
        depths.append(
            QueueDepth(
                name,
                ready=client.llen(f"{ns}:{name}"),
                delayed=client.hlen(f"{ns}:{name}.DQ.msgs"),
                in_flight=in_flight,
                dead=client.zcard(f"{ns}:{name}.XQ"),
            )
        )
    return depths


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
