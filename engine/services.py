"""The services one engine process works with: settings, database, broker and actors."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dramatiq
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from channels.base import Channel
from channels.settings import ChannelSettings
from engine.delivery import Deliverer
from engine.deployed import DeployedJourneys
from engine.environment import read_settings
from engine.orchestrator import Followups, Orchestrator
from engine.policy import PolicyLayer, record_bounce
from engine.ratelimit import RateLimiter, RedisRateLimiter, build_limiter, check_channels
from engine.errors import ConfigError
from engine.settings import Settings
from engine.storage.db import make_engine, make_sessionmaker
from engine.workers.actors import Actors, declare, delivery_queue
from engine.workers.broker import broker_name, limiter_redis, make_broker

log = logging.getLogger(__name__)

# Events per queue message: enough to make a batch cheap to enqueue, small enough that
# a retry redoes little.
EVENTS_PER_MESSAGE = 100
# Deliveries per queue message, one channel each: the deliverer claims, decides and
# records a message's deliveries together.
DELIVERIES_PER_MESSAGE = 50


@dataclass
class Services:
    """Everything a process of the engine needs, built once at start-up.

    Attributes:
        settings: the settings read from the environment.
        engine / sessions: the database, the source of truth.
        broker / actors: the queue that carries work, and the actors declared on it.
        rate_limiter: the channels' rate limits, shared through Redis when there is one:
            the broker's, or ``REDIS_URL``'s beside RabbitMQ (``CHANNEL_RATE_LIMITS``).
    """

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    broker: dramatiq.Broker
    channel_settings: ChannelSettings = field(default_factory=ChannelSettings)
    actors: Actors = field(init=False)
    deployed: DeployedJourneys = field(init=False)
    orchestrator: Orchestrator = field(init=False)
    policy: PolicyLayer = field(init=False)
    deliverer: Deliverer = field(init=False)
    rate_limiter: RateLimiter = field(init=False)
    #: adapters by channel name; tests put stubs here before the first send
    adapters: dict[str, Channel] = field(default_factory=dict)
    #: ``journey dev``: a channel whose settings are missing logs its messages instead
    preview_unconfigured: bool = False
    #: the workers' clock: when an event is applied, a timer fired, a delivery judged and
    #: sent. The demo and tests move it; nothing else should.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        from channels import registry

        self.actors = declare(self)
        self.deployed = DeployedJourneys(self.sessions)
        self.orchestrator = Orchestrator(self.deployed)
        self.policy = PolicyLayer(self.settings, self.sessions, self.deployed)
        self.rate_limiter = build_limiter(self.settings, limiter_redis(self.settings, self.broker), channels=registry.available())
        check_channels(self.settings.max_attempts, registry.available(), "CHANNEL_MAX_ATTEMPTS")
        self.deliverer = Deliverer(
            self.sessions, self.deployed, self.adapter, self.policy, unsubscribe_links=self.policy.unsubscribe_url,
            limiter=self.rate_limiter, bounces=record_bounce, max_attempts=self.settings.max_attempts,
        )
        self._adapters_lock = threading.Lock()
        # A worker consumes the queues declared when it starts: declare every installed
        # channel's queue up front, in every process.
        self.declare_delivery_queues(registry.available())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, process: str | None = None,
                 preview_unconfigured: bool = False) -> Services:
        """Build the services of a process from the environment: the one way every process does.

        ``journey serve``, ``worker``, ``scheduler``, ``dev`` and every other command call
        this, so what one process reads (the engine's settings, the channels' settings)
        every other reads too.

        Args:
            environ: the environment (default: ``os.environ``).
            process: the process's name; when given, which channels are configured is
                logged, so an operator sees at start-up what will be sent and what not.
            preview_unconfigured: ``journey dev``: a channel without settings logs its
                messages instead of failing them.

        Raises:
            ConfigError: a variable is malformed (every one named, one line each).
        """
        environ = os.environ if environ is None else environ
        # Every malformed variable is reported at once, the engine's and the channels'.
        problems = []
        try:
            settings = read_settings(environ)
        except ConfigError as exc:
            problems.append(str(exc))
        try:
            channel_settings = ChannelSettings.from_env(environ)
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))
        services = cls.from_settings(settings, channel_settings)
        services.preview_unconfigured = preview_unconfigured
        if process is not None:
            services.log_channels(process)
        return services

    @classmethod
    def from_settings(cls, settings: Settings, channel_settings: ChannelSettings | None = None) -> Services:
        """Connect to the database and the broker named by ``settings``.

        For tests and tools that build settings by hand; a process reads them from the
        environment with :meth:`from_env`.
        """
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        return cls(
            settings, engine, make_sessionmaker(engine), make_broker(settings),
            channel_settings=channel_settings or ChannelSettings(),
        )

    def adapter(self, channel: str, *, preview: bool = True) -> Channel:
        """The adapter of ``channel``, built on first use from the channel settings.

        Args:
            preview: in ``journey dev`` (``preview_unconfigured``), stand a logging
                preview in for a channel without settings; False raises instead.

        Raises:
            ConfigError: the channel needs a setting that is missing, or no adapter of
                that name is installed.
        """
        adapter = self.adapters.get(channel)
        if adapter is None:
            with self._adapters_lock:
                adapter = self.adapters.get(channel)
                if adapter is None:
                    from channels import registry

                    try:
                        adapter = registry.load(channel, self.channel_settings)
                    except ConfigError as exc:
                        if not (self.preview_unconfigured and preview):
                            raise
                        from channels.log import PreviewChannel

                        log.debug("channel %s is not configured (%s); its messages are logged instead", channel, exc)
                        adapter = PreviewChannel(channel)
                    self.adapters[channel] = adapter
        return adapter

    def channel_problems(self) -> dict[str, str | None]:
        """Every installed channel, with why it cannot send (None: it is configured).

        Builds each adapter once (no connection is made): a missing or malformed setting
        shows here, at start-up, instead of at the first send.
        """
        from channels import registry

        problems: dict[str, str | None] = {}
        for name in registry.available():
            try:
                self.adapter(name, preview=False)
            except ConfigError as exc:
                problems[name] = str(exc)
            else:
                problems[name] = None
        return problems

    def log_channels(self, process: str) -> None:
        """Log which channels this process sends through and which it does not, and its broker."""
        problems = self.channel_problems()
        ready = [name for name, problem in problems.items() if problem is None]
        log.info("%s: channels configured: %s", process, ", ".join(ready) or "none")
        fallback = "its messages are logged instead" if self.preview_unconfigured else "its sends fail at once"
        for name, problem in problems.items():
            if problem is not None:
                log.warning("%s: channel %s is not configured (%s); %s", process, name, problem, fallback)
        log.info("%s: broker: %s, namespace %s", process, broker_name(self.settings), self.settings.namespace)

    def declare_delivery_queues(self, channels: Sequence[str]) -> None:
        """Declare ``deliveries.<channel>`` for each channel, so a worker consumes them."""
        for channel in channels:
            self.broker.declare_queue(delivery_queue(channel))

    def dispatch(self, followups: Followups) -> bool:
        """Send the queue messages for committed deliveries and due timers; False on failure.

        A failure loses nothing: the rows stay pending and the scheduler sends them again.
        """
        try:
            by_channel: dict[str, list[int]] = {}
            for delivery_id, channel in followups.deliveries:
                by_channel.setdefault(channel, []).append(delivery_id)
            for channel, ids in by_channel.items():
                queue = delivery_queue(channel)
                self.broker.declare_queue(queue)
                for start in range(0, len(ids), DELIVERIES_PER_MESSAGE):
                    message = self.actors.deliver.message(ids[start : start + DELIVERIES_PER_MESSAGE])
                    self.broker.enqueue(message.copy(queue_name=queue))
            if followups.timers:
                self.actors.fire_timers.send(list(followups.timers))
        except Exception:  # noqa: BLE001 - the broker being down must not fail the work done
            log.warning("could not enqueue follow-ups; the scheduler will", exc_info=True)
            return False
        return True

    def enqueue_events(self, event_ids: Sequence[int]) -> bool:
        """Send the ids of committed events to the ``events`` queue; False if that failed.

        A failure loses nothing: the rows stay unprocessed and the sweeper sends them again.
        """
        try:
            for start in range(0, len(event_ids), EVENTS_PER_MESSAGE):
                self.actors.process_events.send(list(event_ids[start : start + EVENTS_PER_MESSAGE]))
        except Exception:  # noqa: BLE001 - the broker being down must not fail the request
            log.warning("could not enqueue %d events; the sweeper will", len(event_ids), exc_info=True)
            return False
        return True

    def close(self) -> None:
        """Release the adapters, the database connections and the broker."""
        for adapter in self.adapters.values():
            adapter.close()
        self.broker.close()
        if isinstance(self.rate_limiter, RedisRateLimiter):
            self.rate_limiter.client.close()  # beside RabbitMQ, a client of its own
        self.engine.dispose()
