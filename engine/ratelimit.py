"""Per-channel rate limits: at most so many sends per second, across every worker process.

The deliverer asks before each send::

    wait = limiter.acquire("email")
    if wait:            # seconds until a send may go; nothing was consumed
        ...             # come back later: the send is delayed, not failed

Both limiters apply the same rule, GCRA (the generic cell rate algorithm, a token bucket
kept as one timestamp): a channel limited to ``rate`` sends per second with ``burst``
allows ``burst`` sends at once from rest, then one every ``1 / rate`` seconds. Over any
stretch of ``t`` seconds it grants at most ``rate * t + burst`` sends.

- :class:`RedisRateLimiter` keeps the timestamp in Redis and decides in one Lua script,
  on the Redis server's clock, so worker processes on any number of machines share one
  limit and their own clocks do not matter. Used when the broker is Redis.
- :class:`InProcessRateLimiter` keeps it in memory behind a lock: the twin, for the
  embedded default (one process, the in-process broker) and for tests.

Times are whole microseconds inside, so both compute exactly the same answers and the
allowance above holds without rounding: the interval between sends is rounded up to a
whole microsecond, the burst's span down.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ConfigError, did_you_mean
from engine.settings import MICROSECONDS, RateLimit, Settings

if TYPE_CHECKING:
    import redis


@dataclass(frozen=True)
class Ticket:
    """A limiter's answer to one request to send.

    Attributes:
        wait: 0.0 when the send may go now (it was counted); otherwise the seconds to
            wait before asking again (nothing was counted).
        at: the limiter's clock when it decided, in seconds (the Redis server's clock for
            :class:`RedisRateLimiter`); ``None`` for a channel without a limit, where no
            clock is read.
    """

    wait: float
    at: float | None

    @property
    def granted(self) -> bool:
        """True when the send may go now."""
        return self.wait == 0.0


UNLIMITED = Ticket(0.0, None)


class RateLimiter(ABC):
    """Decides, before each send, whether a channel's rate limit lets it go now.

    A channel with no limit is always granted at once, without any I/O.

    Args:
        limits: the limit of each limited channel (``Settings.rate_limits``).
    """

    def __init__(self, limits: Mapping[str, RateLimit]) -> None:
        self.limits: Mapping[str, RateLimit] = dict(limits)

    def acquire(self, channel: str, now: float | None = None) -> float:
        """Take one send of ``channel``'s allowance, if there is one now.

        Args:
            channel: the channel about to send.
            now: the limiter's clock, in seconds, for tests and simulations; leave it
                ``None`` in production (every caller sharing a limit must use one clock).

        Returns:
            0.0 if the send may go now (and it was counted), else the seconds to wait
            before asking again (nothing was counted).
        """
        return self.ticket(channel, now).wait

    def ticket(self, channel: str, now: float | None = None) -> Ticket:
        """Like :meth:`acquire`, and also say when, on the limiter's clock, it decided."""
        limit = self.limits.get(channel)
        if limit is None:
            return UNLIMITED
        now_us = None if now is None else round(now * MICROSECONDS)
        wait_us, at_us = self._take(channel, limit, now_us)
        return Ticket(wait_us / MICROSECONDS, at_us / MICROSECONDS)

    @abstractmethod
    def _take(self, channel: str, limit: RateLimit, now_us: int | None) -> tuple[int, int]:
        """Apply GCRA to ``channel``; return (microseconds to wait, clock in microseconds)."""


def gcra(booked_us: int | None, now_us: int, limit: RateLimit) -> tuple[int, int | None]:
    """One GCRA step: return (microseconds to wait, the new booked-until time or None).

    ``booked_us`` is when the sends granted so far would have gone at the steady rate
    (the "theoretical arrival time"); a send may go if booking one more interval keeps it
    within ``span_us`` of now. :data:`_GCRA_LUA` is the same step in Lua, for Redis.
    """
    booked = max(booked_us if booked_us is not None else now_us, now_us) + limit.interval_us
    wait = booked - now_us - limit.span_us
    if wait > 0:
        return wait, None
    return 0, booked


class InProcessRateLimiter(RateLimiter):
    """Rate limits kept in this process's memory; thread-safe. Limits one process only."""

    def __init__(self, limits: Mapping[str, RateLimit]) -> None:
        super().__init__(limits)
        self._booked: dict[str, int] = {}
        self._lock = threading.Lock()

    def _take(self, channel: str, limit: RateLimit, now_us: int | None) -> tuple[int, int]:
        if now_us is None:
            now_us = time.monotonic_ns() // 1000
        with self._lock:
            wait, booked = gcra(self._booked.get(channel), now_us, limit)
            if booked is not None:
                self._booked[channel] = booked
        return wait, now_us


# KEYS[1]: the channel's key. ARGV: interval_us, span_us, now_us ('' for the server's TIME).
# The same step as gcra(). Numbers are whole microseconds, exact in Lua's doubles
# (below 2**53), and travel as strings: Redis turns a Lua number reply into an integer.
# The key expires when the channel is back at rest, which is what a missing key means.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local booked = tonumber(redis.call('GET', KEYS[1])) or now
if booked < now then booked = now end
booked = booked + interval
local wait = booked - now - span
if wait > 0 then
  return {string.format('%.0f', wait), string.format('%.0f', now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', booked), 'PX', math.ceil((booked - now) / 1000) + 1)
return {'0', string.format('%.0f', now)}
"""


class RedisRateLimiter(RateLimiter):
    """Rate limits shared through Redis by every process that uses the same prefix.

    One round trip per send of a limited channel (EVALSHA of one script). Redis errors
    propagate: the caller treats them like a broker that is down.

    Args:
        client: a ``redis.Redis`` (the broker's client will do).
        limits: the limit of each limited channel.
        prefix: the start of every key; a channel's state is ``{prefix}:{channel}``.
    """

    def __init__(self, client: redis.Redis, limits: Mapping[str, RateLimit], prefix: str) -> None:
        super().__init__(limits)
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_GCRA_LUA)

    def key(self, channel: str) -> str:
        """The Redis key that holds ``channel``'s state."""
        return f"{self.prefix}:{channel}"

    def _take(self, channel: str, limit: RateLimit, now_us: int | None) -> tuple[int, int]:
        args = [limit.interval_us, limit.span_us, "" if now_us is None else now_us]
        wait, at = self._script(keys=[self.key(channel)], args=args)
        return int(wait), int(at)


def check_channels(limits: Mapping[str, object], channels: Iterable[str], variable: str = "CHANNEL_RATE_LIMITS") -> None:
    """Refuse a setting on a channel that is not installed: a typo would limit nothing.

    Raises:
        ConfigError: one line per unknown channel, with the closest installed name.
    """
    installed = sorted(channels)
    unknown = [name for name in limits if name not in installed]
    if unknown:
        raise ConfigError("\n".join(
            f"{variable} names the channel {name!r}, which is not installed."
            f"{did_you_mean(name, installed)} (installed: {', '.join(installed) or 'none'})"
            for name in unknown
        ))


def build_limiter(
    settings: Settings, redis_client: redis.Redis | None, *, channels: Iterable[str] | None = None
) -> RateLimiter:
    """The limiter for ``settings.rate_limits``: shared through Redis when there is a client.

    Args:
        settings: the engine's settings; keys live under ``{namespace}:ratelimit``.
        redis_client: the Redis the broker uses, or ``None`` for the in-process broker.
        channels: the installed channels, to refuse a limit on a channel that does not
            exist (a typo would otherwise limit nothing); ``None`` skips that check.

    Raises:
        ConfigError: ``CHANNEL_RATE_LIMITS`` names a channel that is not installed.
    """
    if channels is not None:
        check_channels(settings.rate_limits, channels)
    limits = settings.rate_limits
    if redis_client is None or not limits:
        return InProcessRateLimiter(limits)
    return RedisRateLimiter(redis_client, limits, f"{settings.namespace}:ratelimit")
