"""Settings: one object read from the environment at start-up, never at import time.

This module is the ground: it imports nothing of the engine's, so every module (and
``channels``) may import it without pulling in the rest. It holds the values, and the
value types they are made of (:class:`FrequencyCap`, :class:`RateLimit`); reading them
from the environment, with a clear error for each bad variable, is
:mod:`engine.environment`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///journey.db"
MICROSECONDS = 1_000_000
#: The slowest and fastest rates accepted: below 0.001/s a frequency cap is the tool; above
#: a million per second the interval would be less than the microsecond times are kept in.
MIN_RATE = 0.001
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000.0


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``max`` marketing messages per customer in each rolling ``per`` window.

    A channel's cap across journeys (``Settings.frequency_caps``) and a journey's own
    (``policy.frequency_cap``, which overrides its channel's) are both one of these.
    """

    max: int
    per: timedelta


@dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` sends per second on a channel, with bursts of up to ``burst``.

    Raises:
        ValueError: ``rate`` or ``burst`` is out of range (the message says which).
    """

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and MIN_RATE <= self.rate <= MAX_RATE):
            raise ValueError(f"the rate {self.rate:g} is not between {MIN_RATE:g} and {MAX_RATE:.0f} sends per second")
        if not (math.isfinite(self.burst) and 1 <= self.burst <= MAX_BURST):
            raise ValueError(f"the burst {self.burst:g} is not between 1 and {MAX_BURST:.0f} sends")

    @classmethod
    def per_second(cls, rate: float, burst: float | None = None) -> RateLimit:
        """``rate`` sends per second; ``burst`` defaults to the rate, and is at least 1."""
        return cls(rate, max(1.0, rate) if burst is None else burst)

    @property
    def interval_us(self) -> int:
        """Microseconds between two sends at the steady rate (rounded up: never faster)."""
        return math.ceil(MICROSECONDS / self.rate)

    @property
    def span_us(self) -> int:
        """How far ahead of now a channel may have booked sends: ``burst`` intervals."""
        return math.floor(self.burst * self.interval_us)

    def __str__(self) -> str:
        return f"{self.rate:g}/{self.burst:g}"


@dataclass(frozen=True)
class Settings:
    """Everything the engine's processes need to know about their surroundings.

    Build it with :func:`engine.environment.read_settings`; tests build it directly
    or with :meth:`replace`.

    Attributes:
        database_url: SQLAlchemy URL of the source of truth (``DATABASE_URL``).
        redis_url: URL of Redis (``REDIS_URL``): the Dramatiq broker unless ``BROKER_URL``
            names another, and where the channels' rate limits are shared. ``None`` (and
            no ``BROKER_URL``) means the in-process broker of ``journey dev``.
        broker_url: URL of the Dramatiq broker (``BROKER_URL``): ``redis://...`` or
            ``amqp://...`` (RabbitMQ); ``None`` means ``REDIS_URL``'s Redis. Read it
            through :attr:`queue_url`.
        namespace: prefix of every Redis key and queue name (``JOURNEY_NAMESPACE``), so
            several engines, or several tests, can share one Redis or one RabbitMQ.
        sweep_after: how long a piece of work may stay pending in the database before
            the sweeper enqueues it again (``JOURNEY_SWEEP_AFTER``).
        sweep_interval: how often the scheduler sweeps (``JOURNEY_SWEEP_INTERVAL``).
        worker_processes / worker_threads: Dramatiq worker size
            (``JOURNEY_WORKER_PROCESSES``, ``JOURNEY_WORKER_THREADS``).
        db_pool_size: connections per process (``JOURNEY_DB_POOL_SIZE``).
        key_cache: how long the API trusts a key it has checked (``JOURNEY_KEY_CACHE``);
            a revoked key stops working within this time. ``0s`` checks every request.
        log_level: Python logging level name (``LOG_LEVEL``).
        frequency_caps: marketing sends allowed per customer per channel per rolling
            window, across all journeys (``JOURNEY_FREQUENCY_CAP``, written
            ``email=3/1d,sms=2/1d``: ``channel=max/duration``, comma-separated); a
            journey's ``policy.frequency_cap`` overrides its channel's entry.
        secret: signs unsubscribe links (``JOURNEY_SECRET``). Required with PostgreSQL
            when ``JOURNEY_PUBLIC_URL`` is set; otherwise, if unset, a secret generated
            once per database and stored in it is used (for development).
        public_url: the base URL customers reach the API at (``JOURNEY_PUBLIC_URL``),
            for unsubscribe links; without it, no ``List-Unsubscribe`` is sent.
        rate_limits: sends per second per channel, across every worker process
            (``CHANNEL_RATE_LIMITS``, written ``email=10/20,sms=2.5``: ``channel=rate`` or
            ``channel=rate/burst``, comma-separated; the burst defaults to the rate, at
            least 1). A channel not named has no limit.
        max_attempts: attempts per channel before a retryable failure is ``dead``
            (``CHANNEL_MAX_ATTEMPTS``, written ``email=8,sms=3``); 5 for a channel not named.
    """

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    broker_url: str | None = None
    namespace: str = "journey"
    sweep_after: timedelta = timedelta(minutes=2)
    sweep_interval: timedelta = timedelta(seconds=10)
    worker_processes: int = 1
    worker_threads: int = 8
    db_pool_size: int = 10
    key_cache: timedelta = timedelta(seconds=5)
    log_level: str = "INFO"
    frequency_caps: Mapping[str, FrequencyCap] = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)
    public_url: str | None = None
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    max_attempts: Mapping[str, int] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite default (or another SQLite file)."""
        return self.database_url.startswith("sqlite")

    @property
    def queue_url(self) -> str | None:
        """The broker's URL: ``BROKER_URL``, else ``REDIS_URL``; ``None`` for the in-process broker."""
        return self.broker_url or self.redis_url

    @property
    def is_rabbitmq(self) -> bool:
        """True when the broker is RabbitMQ (``BROKER_URL=amqp://...`` or ``amqps://...``)."""
        return (self.queue_url or "").startswith(("amqp://", "amqps://"))

    @property
    def broker_variable(self) -> str:
        """The variable that names the broker, for messages: ``BROKER_URL`` or ``REDIS_URL``."""
        return "BROKER_URL" if self.broker_url else "REDIS_URL"
