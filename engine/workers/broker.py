"""The Dramatiq broker: RabbitMQ or Redis when the settings name one, the in-process stub otherwise.

``BROKER_URL`` names the broker (``amqp://...`` RabbitMQ, ``redis://...`` Redis); unset,
``REDIS_URL``'s Redis is the broker, as before there was a choice. Both real brokers get
Dramatiq's default middleware (retries, time limits, age limits, callbacks, pipelines,
shutdown notifications), and the engine's actors their own options on top: the choice of
broker changes where the messages wait, nothing else.

Actors are declared on an explicit broker (see :mod:`engine.workers.actors`), so a test
can build as many engines as it likes, each on its own broker, in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
import pika
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed
from urllib.parse import parse_qs, urlsplit

from engine.settings import Settings


#: Seconds to connect to Redis, and to wait for one answer.
REDIS_CONNECT_TIMEOUT = 5
REDIS_TIMEOUT = 10
#: Seconds to connect to RabbitMQ, and how long a publish may stay blocked by RabbitMQ's
#: flow control (a memory or disk alarm) before the enqueue fails, unless the URL says
#: otherwise (``?socket_timeout=...&blocked_connection_timeout=...``).
RABBITMQ_CONNECT_TIMEOUT = 5
RABBITMQ_BLOCKED_TIMEOUT = 30
#: Milliseconds at most between two polls of an empty Redis queue. Dramatiq's consumer
#: backs off from 5 ms up to the worker's timeout (1 s by default) while a queue stays
#: empty, so a message arriving at a quiet queue waited up to a second, once per hop
#: (events, then deliveries). Capped here: 10-20 polls a second (Dramatiq's jitter) per idle queue and process.
REDIS_IDLE_POLL_MS = 100


def quiet_pika(log_level: str) -> None:
    """Keep pika's own logs out of the engine's, unless ``LOG_LEVEL=DEBUG``.

    pika logs every connection it opens at INFO, and a failed one with a traceback at
    ERROR; what a failure means for the work is logged by the engine (an enqueue left to
    the sweeper, ``journey queues`` failing with one line) and by Dramatiq (a consumer
    reconnecting).
    """
    logging.getLogger("pika").setLevel(logging.DEBUG if log_level == "DEBUG" else logging.CRITICAL)


def broker_name(settings: Settings) -> str:
    """The broker, for a message: "RabbitMQ at amqp://host:5672/", "Redis at ...", or the in-process one (no password)."""
    url = settings.queue_url
    if url is None:
        return "the in-process broker"
    parts = urlsplit(url.split(";")[0])
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="").geturl()
    return f"{'RabbitMQ' if settings.is_rabbitmq else 'Redis'} at {shown}"


def make_broker(settings: Settings) -> dramatiq.Broker:
    """Return a new broker for ``settings``: RabbitMQ or Redis under the settings' namespace, or a stub."""
    url = settings.queue_url
    if url is None:
        return StubBroker()
    if settings.is_rabbitmq:
        return NamespacedRabbitmqBroker(url, settings.namespace)
    # Every key lives under the namespace, so engines (or tests) can share one Redis.
    return EngineRedisBroker(client=redis_client(url), namespace=f"{settings.namespace}-dramatiq")


class EngineRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, its consumers polling an empty queue every ``REDIS_IDLE_POLL_MS`` at most.

    Redis has no push to a consumer here: Dramatiq polls with a Lua script, backing off
    while the queue is empty, up to the ``timeout`` the worker passes (its
    ``worker_timeout``, 1 s unless ``dramatiq_worker_timeout`` says otherwise). That
    timeout only bounds the backoff of a Redis consumer, so capping it changes nothing else.
    Delay queues keep Dramatiq's backoff: what waits there waits for its delay anyway.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        if queue_name == dq_name(queue_name):  # a delay queue (retries, rate-limited sends): its wait is its delay
            return super().consume(queue_name, prefetch, timeout)
        return super().consume(queue_name, prefetch, min(timeout, REDIS_IDLE_POLL_MS))


def redis_client(url: str) -> redis.Redis:
    """A client of the Redis at ``url`` that fails a call after the timeouts instead of hanging it.

    An API request waits for its enqueue, a worker's consumer reconnects.
    """
    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_TIMEOUT)


def limiter_redis(settings: Settings, broker: dramatiq.Broker) -> redis.Redis | None:
    """The Redis the channels' rate limits are shared through, or ``None`` for limits of this process only.

    The broker's own client when the broker is Redis; with RabbitMQ, ``REDIS_URL``'s
    Redis when it is set (:func:`engine.environment.read_settings` requires it when
    ``CHANNEL_RATE_LIMITS`` is set); with the in-process broker, none.
    """
    if isinstance(broker, RedisBroker):
        return broker.client
    if isinstance(broker, NamespacedRabbitmqBroker) and settings.redis_url and settings.rate_limits:
        return redis_client(settings.redis_url)
    return None


class NamespacedRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, its queues named ``NAMESPACE.QUEUE`` on the server.

    Durable queues, persistent messages, and publisher confirms (``confirm_delivery``):
    an enqueue returns once RabbitMQ has taken the message, so work committed and then
    enqueued is really on the broker (or the enqueue raised, and the sweeper sends it).

    The engine, its actors and its messages only ever see the queue names without the
    prefix (``events``, ``deliveries.email``); the prefix is added where a name goes to
    the server: declares, publishes, consumers, purges. So several engines, or several
    tests, share one RabbitMQ and one virtual host, each with queues of its own. (A
    virtual host per engine would need RabbitMQ's management tools to create it; the
    virtual host in the URL is used as it is.)

    Args:
        url: the ``amqp://`` or ``amqps://`` URL (several, separated by ``;``, to fail over).
        namespace: the engine's ``JOURNEY_NAMESPACE``.
    """

    def __init__(self, url: str, namespace: str, **options: Any) -> None:
        super().__init__(url=url, confirm_delivery=True, **options)
        self.prefix = f"{namespace}."
        for parameters, one in zip(self.all_parameters, url.split(";"), strict=True):
            query = parse_qs(urlsplit(one.strip()).query)
            if "socket_timeout" not in query:
                parameters.socket_timeout = RABBITMQ_CONNECT_TIMEOUT
            if "blocked_connection_timeout" not in query:
                parameters.blocked_connection_timeout = RABBITMQ_BLOCKED_TIMEOUT

    @property
    def all_parameters(self) -> list[pika.ConnectionParameters]:
        """The connection parameters of each server the URL names."""
        return list(self.parameters) if isinstance(self.parameters, list) else [self.parameters]

    def wire_name(self, queue_name: str) -> str:
        """The name RabbitMQ knows ``queue_name`` (or its ``.DQ`` / ``.XQ``) by."""
        return self.prefix + queue_name

    def delete_queues(self, queue_names: Iterable[str]) -> None:
        """Delete these queues, their delay and dead-letter queues and their messages from the server.

        For tests and benches that clean up their namespace: without the management API
        the queues under a prefix cannot be listed, so they are named.
        """
        for name in queue_names:
            for queue in (name, dq_name(name), xq_name(name)):
                self.channel.queue_delete(self.wire_name(queue))

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _NamespacedConsumer

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)
        arguments["x-dead-letter-routing-key"] = self.wire_name(xq_name(queue_name))
        return arguments

    @property
    def channel(self) -> Any:
        """The current thread's channel, which adds the prefix to the queue names it sends."""
        return _NamespacedChannel(super().channel, self.wire_name)

    @channel.deleter
    def channel(self) -> None:
        RabbitmqBroker.channel.fdel(self)  # type: ignore[attr-defined]  # the base class's deleter


class _NamespacedChannel:
    """A pika channel whose queue names (declare, publish, purge) get the namespace's prefix."""

    def __init__(self, channel: Any, wire_name: Callable[[str], str]) -> None:
        self._channel = channel
        self._wire_name = wire_name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def queue_declare(self, queue: str, **options: Any) -> Any:
        return self._channel.queue_declare(queue=self._wire_name(queue), **options)

    def queue_purge(self, queue: str) -> Any:
        return self._channel.queue_purge(self._wire_name(queue))

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, **options: Any) -> Any:
        return self._channel.basic_publish(exchange, self._wire_name(routing_key), body, **options)


class _NamespacedConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer on the queue's prefixed name."""

    def __init__(self, broker: NamespacedRabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, broker.wire_name(queue_name), prefetch, timeout)
        self.canonical = q_name(queue_name)

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except ConnectionClosed:
            # The base class marks a vanished queue to be declared again under the name it
            # consumes, the prefixed one; the broker knows it by the plain name.
            self.broker.queues_pending.discard(q_name(self.queue_name))
            self.broker.queues_pending.add(self.canonical)
            raise
