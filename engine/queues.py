"""What is waiting where: broker queue depths, the rows messages still carry, the database's backlog.

This is the one module that knows how each broker keeps its messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import DecodeError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.storage.models import DELIVERY_STATUSES, Delivery, Event, Timer
from engine.workers.broker import NamespacedRabbitmqBroker

log = logging.getLogger(__name__)

#: Entries per SCAN / HSCAN call: a big queue is read in many short calls, never one long one.
SCAN_CHUNK = 1000


@dataclass(frozen=True)
class QueueDepth:
    """Messages of one queue: ready to run, delayed (retry backoff), in flight, dead.

    ``in_flight`` is ``None`` where the broker cannot tell: RabbitMQ counts the messages
    workers hold unacknowledged only in its management API, which the engine does not use.
    """

    name: str
    ready: int
    delayed: int
    in_flight: int | None
    dead: int


def queue_depths(broker: dramatiq.Broker) -> list[QueueDepth]:
    """Return the depth of every queue the broker knows, sorted by name.

    A queue's delay queue (``NAME.DQ``: retries waiting for their backoff, messages sent
    with a delay) is counted as the queue's ``delayed`` messages, not as a queue of its own.
    """
    if isinstance(broker, RedisBroker):
        return _redis_depths(broker)
    if isinstance(broker, NamespacedRabbitmqBroker):
        return [QueueDepth(name, ready, delayed, None, dead) for name, (ready, delayed, dead) in _rabbitmq_counts(broker).items()]
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


def _rabbitmq_counts(broker: NamespacedRabbitmqBroker) -> dict[str, tuple[int, int, int]]:
    """(ready, delayed, dead) of every queue the broker declared, sorted by name.

    Read with passive declares on a connection of its own: a passive declare answers a
    queue's count of messages no consumer holds, and creates nothing. A queue not on the
    server yet (no process used it) has no messages. The counts are read one queue after
    another, not in one snapshot as on Redis. Messages a worker holds unacknowledged are
    in none of them: in flight, and the delayed messages a worker took from ``.DQ`` to
    hold until they are due (up to its delay prefetch, 1000 by default).
    """
    names = sorted(n for n in broker.get_declared_queues() if not n.endswith((".DQ", ".XQ")))
    counts: dict[str, tuple[int, int, int]] = {}
    connection = pika.BlockingConnection(broker.all_parameters)
    try:
        channel = connection.channel()

        def count(queue: str) -> int:
            nonlocal channel
            try:
                return int(channel.queue_declare(queue=broker.wire_name(queue), passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:  # NOT_FOUND closes the channel: a queue nobody declared yet
                    raise
                channel = connection.channel()
                return 0

        for name in names:
            counts[name] = (count(name), count(dq_name(name)), count(xq_name(name)))
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass  # already closed by the server: nothing to release
    return counts


@dataclass(frozen=True)
class Carried:
    """The row ids that messages still on the broker carry, by queue.

    A queue's delay queue is folded into the queue. ``unreadable`` are the queues that
    hold messages whose ids could not be read: every row of theirs counts as carried.
    """

    ids: dict[str, frozenset[Any]]
    unreadable: frozenset[str] = frozenset()

    def carries(self, queue: str, row_id: Any) -> bool:
        """Whether a message on ``queue`` (or its delay queue) may still carry ``row_id``."""
        return queue in self.unreadable or row_id in self.ids.get(queue, frozenset())


def carried(broker: dramatiq.Broker, dead_before: datetime) -> Carried:
    """Read the ids of every message the broker holds until it is acknowledged.

    That is every message enqueued and not yet acknowledged: waiting in its queue or its
    delay queue, prefetched or in flight at a worker. Dead letters carry nothing: their
    retries are over; nor do messages held by a worker whose last heartbeat is older than
    ``dead_before``: it died, and Dramatiq puts them back only when its maintenance
    happens to run. A message carries its rows' ids as its first argument: a list of ids
    (or one id).

    Redis keeps each message in the hash ``NS:QUEUE.msgs`` (``NS:QUEUE.DQ.msgs`` when
    delayed) from enqueue to acknowledgement, read here in chunks; a worker's heartbeat is
    in ``NS:__heartbeats__`` and the messages it holds in ``NS:__acks__.WORKER.QUEUE``. The StubBroker shows
    its queues; a message a worker took from one is out of sight, so a stub queue with
    such messages is unreadable. RabbitMQ shows no message without taking it off its
    queue: a queue with messages waiting (in it or its delay queue, by the counts of
    :func:`_rabbitmq_counts`) is unreadable, an empty one carries nothing; a worker's
    unacknowledged messages are in no count, and RabbitMQ gives a dead worker's back at
    once (docs/operations.md, "The database is the source of truth"). Any other broker's
    queues are all unreadable.
    """
    if isinstance(broker, RedisBroker):
        return _redis_carried(broker, dead_before)
    ids: dict[str, set[Any]] = {}
    unreadable: set[str] = set()
    if isinstance(broker, StubBroker):
        for name, queue in list(broker.queues.items()):
            canonical = name.removesuffix(".DQ")
            with queue.mutex:
                waiting = list(queue.queue)
                held = queue.unfinished_tasks - len(waiting)
            if held > 0:
                unreadable.add(canonical)
            if not _read_ids(waiting, ids.setdefault(canonical, set())):
                unreadable.add(canonical)
        return Carried({name: frozenset(found) for name, found in ids.items()}, frozenset(unreadable))
    if isinstance(broker, NamespacedRabbitmqBroker):
        # RabbitMQ shows no message without taking it: a queue (or its delay queue) with
        # messages waiting carries every row of its own; an empty one carries none.
        counts = _rabbitmq_counts(broker)
        return Carried({}, frozenset(name for name, (ready, delayed, _) in counts.items() if ready or delayed))
    # Any other broker's messages cannot be read: every queue it declared is unreadable.
    return Carried({}, frozenset(q_name(name) for name in broker.get_declared_queues()))


def _redis_carried(broker: RedisBroker, dead_before: datetime) -> Carried:
    client, ns = broker.client, broker.namespace
    prefix = _glob_escape(ns)
    abandoned: set[bytes] = set()  # the message ids held by dead workers
    # The broker's client answers bytes (no decode_responses); redis types its answers as any response.
    for worker in cast(list[bytes], client.zrangebyscore(f"{ns}:__heartbeats__", 0, int(dead_before.timestamp() * 1000))):
        for acks in client.scan_iter(f"{prefix}:__acks__.{_glob_escape(worker.decode())}.*", count=SCAN_CHUNK):
            abandoned.update(cast(set[bytes], client.smembers(acks)))
    ids: dict[str, set[Any]] = {}
    unreadable: set[str] = set()
    for key in client.scan_iter(f"{prefix}:*.msgs", count=SCAN_CHUNK):
        name = key.decode().removeprefix(f"{ns}:").removesuffix(".msgs")
        if name.endswith(".XQ"):
            continue  # dead letters
        canonical = name.removesuffix(".DQ")
        messages = (data for field, data in client.hscan_iter(key, count=SCAN_CHUNK) if field not in abandoned)
        if not _read_ids(messages, ids.setdefault(canonical, set())):
            unreadable.add(canonical)
    return Carried({name: frozenset(found) for name, found in ids.items()}, frozenset(unreadable))


def _read_ids(messages: Iterable[bytes], into: set[Any]) -> bool:
    """Add the ids the encoded ``messages`` carry to ``into``; False if one could not be read."""
    readable = True
    for data in messages:
        try:
            args = dramatiq.Message.decode(data).args
        except DecodeError:  # a foreign or corrupt message must not stop the sweep
            log.warning("a queue message could not be decoded; its queue is not swept this time", exc_info=True)
            readable = False
            continue
        first = args[0] if args else None
        into.update(i for i in (first if isinstance(first, list) else [first]) if isinstance(i, (int, str)))
    return readable


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
    #: the deliveries of each status were counted up to this many, plus one (more than ``cap``: ``cap + 1``)
    cap: int | None = None


def backlog(session: Session, now: datetime, *, cap: int | None = None) -> Backlog:
    """Count pending events, due timers (and how late the oldest is), deliveries by status.

    Given ``cap``, each status's deliveries are counted up to ``cap + 1`` only (a range of
    ``ix_deliveries_status_id`` each), so the console's overview costs the same on 1M deliveries
    as on a thousand; without, every delivery is counted (the metrics, ``journey queues``).
    """
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
    if cap is None:
        deliveries = dict(session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
    else:
        deliveries = {status: count for status, count in zip(DELIVERY_STATUSES, session.execute(select(*(
            select(func.count()).select_from(select(Delivery.id).where(Delivery.status == status).limit(cap + 1).subquery())
            .scalar_subquery() for status in DELIVERY_STATUSES))).one(), strict=True) if count}
    return Backlog(pending, failing, due, lag, deliveries, cap)


@dataclass(frozen=True)
class Oldest:
    """When the oldest work still waiting was written: an event not applied, a delivery pending."""

    event: datetime | None
    delivery: datetime | None


def oldest_pending(session: Session) -> Oldest:
    """The oldest unapplied event and pending delivery (the partial indexes of both keep this cheap)."""
    event = session.execute(select(func.min(Event.received_at)).where(Event.processed_at.is_(None))).scalar_one_or_none()
    delivery = session.execute(select(func.min(Delivery.created_at)).where(Delivery.status == "pending")).scalar_one_or_none()
    return Oldest(_read_aggregate(event), _read_aggregate(delivery))


def sent_per_minute(session: Session, now: datetime, minutes: int = 60) -> list[tuple[datetime, int]]:
    """Deliveries sent in each of the last ``minutes`` minutes, oldest first (empty minutes are 0).

    A range of ``ix_deliveries_sent_at``, grouped by minute in the database.
    """
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    column = Delivery.sent_at
    minute: Any = (func.date_trunc("minute", column) if session.get_bind().dialect.name == "postgresql"
                   else func.strftime("%Y-%m-%d %H:%M:00", column))
    counts: dict[datetime, int] = {}
    for at, count in session.execute(
        select(minute, func.count()).where(column.is_not(None), column >= start, column < end).group_by(minute)
    ).all():
        moment = _read_aggregate(at)
        if moment is not None:
            counts[moment.astimezone(timezone.utc).replace(second=0, microsecond=0)] = int(count)
    return [(start + timedelta(minutes=i), counts.get(start + timedelta(minutes=i), 0)) for i in range(minutes)]


def _read_aggregate(value: Any) -> datetime | None:
    """A time an aggregate answered: SQLite gives text or a naive time (UTC), PostgreSQL an aware one."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value if isinstance(value, datetime) else None
