"""Reading the :class:`~engine.settings.Settings` from the environment.

Every variable is named with its converter and what it expects, and every malformed one
is reported at once, one line each. :mod:`engine.settings` holds the values and imports
nothing of the engine's; the rules for reading them (durations, the errors raised) live
here, above it. ``channels.settings`` reads the channels' variables with the same
:func:`read_environment`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from engine.durations import DURATION_HELP, parse_duration
from engine.errors import ConfigError
from engine.settings import DEFAULT_DATABASE_URL, FrequencyCap, RateLimit, Settings


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``).

    Every malformed value is reported at once, one line each, naming the variable
    and what it expects.

    Raises:
        ConfigError: one or more variables are malformed.
    """
    values, problems = read_environment(os.environ if environ is None else environ, _VARIABLES)
    if (
        "public_url" in values
        and "secret" not in values
        and not values.get("database_url", DEFAULT_DATABASE_URL).startswith("sqlite")
    ):
        problems.append(
            "JOURNEY_SECRET is missing: it signs the unsubscribe links sent to JOURNEY_PUBLIC_URL and is "
            "required with PostgreSQL; set it to a random string, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    broker = values.get("broker_url")
    if broker and broker.startswith(("amqp://", "amqps://")) and values.get("rate_limits") and "redis_url" not in values:
        problems.append(
            "CHANNEL_RATE_LIMITS needs REDIS_URL when BROKER_URL is RabbitMQ: the limits are shared by every "
            "worker process through Redis; set REDIS_URL (such as redis://127.0.0.1:6379/0), or unset "
            "CHANNEL_RATE_LIMITS"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    return Settings(**values)


def _database_url(raw: str) -> str:
    if raw.startswith("postgres://"):
        # Heroku-style URLs: SQLAlchemy only knows the postgresql scheme.
        raw = "postgresql+psycopg://" + raw[len("postgres://"):]
    elif raw.startswith("postgresql://"):
        raw = "postgresql+psycopg://" + raw[len("postgresql://"):]
    if not (raw.startswith("sqlite") or raw.startswith("postgresql")):
        raise ValueError("only PostgreSQL and SQLite are supported")
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("the scheme must be redis://, rediss:// or unix://")
    return raw


BROKER_SCHEMES = ("redis://", "rediss://", "unix://", "amqp://", "amqps://")


def _broker_url(raw: str) -> str:
    if not raw.startswith(BROKER_SCHEMES):
        raise ValueError("the scheme must be amqp:// or amqps:// (RabbitMQ), or redis://, rediss:// or unix:// (Redis)")
    if raw.startswith(("amqp://", "amqps://")):
        import pika  # only a RabbitMQ URL needs it

        try:
            pika.URLParameters(raw)  # what the broker will connect with: a bad port or query fails here, not later
        except ValueError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
    return raw


def _namespace(raw: str) -> str:
    if not raw.replace("-", "").replace("_", "").isalnum():
        raise ValueError("it contains characters other than letters, digits, '-' and '_'")
    return raw


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value < 1:
        raise ValueError("it must be at least 1")
    return value


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("unknown level")
    return level


def parse_frequency_caps(raw: str) -> dict[str, FrequencyCap]:
    """Parse ``email=3/1d,sms=2/1d`` into a cap per channel.

    Raises:
        ValueError: a part is not ``channel=max/duration``; the message names it.
    """
    caps: dict[str, FrequencyCap] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        channel, eq, rest = part.partition("=")
        count, slash, window = rest.partition("/")
        if not (eq and slash and channel.strip() and count.strip().isdigit()):
            raise ValueError(f"{part!r} is not channel=max/duration")
        caps[channel.strip()] = FrequencyCap(int(count), parse_duration(window.strip()))
    return caps


#: (environment variable, attribute, converter, what it expects)
Variable = tuple[str, str, Callable[[str], Any], str]


def read_environment(env: Mapping[str, str], variables: Iterable[Variable]) -> tuple[dict[str, Any], list[str]]:
    """Convert the variables that are set; return the values by attribute and one problem line per bad one.

    A problem names the variable, shows the value (never a secret's, and a URL without
    its password), says what is wrong and what is expected.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, attr, convert, expects in variables:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[attr] = convert(raw.strip())
        except ValueError as exc:
            # A converter's reason may already say what is expected (parse_duration does): once is enough.
            reason = str(exc) if expects in str(exc) else f"{exc}; expected {expects}"
            problems.append(f"{name}={_shown(name, raw)} is invalid: {reason}")
    return values, problems


def _shown(name: str, raw: str) -> str:
    if name.endswith(("_TOKEN", "_SECRET")):
        return "<hidden>"
    if name.endswith("_URL") and "@" in raw:  # it may carry a password
        try:
            parts = urlsplit(raw.strip())
        except ValueError:
            return "<hidden>"
        if not parts.password:
            return "<hidden>" if ":" in parts.netloc.partition("@")[0] else repr(raw)
        return repr(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":<hidden>@")).geturl())
    return repr(raw)


def parse_rate_limits(raw: str) -> dict[str, RateLimit]:
    """Parse ``email=10/20,sms=2.5`` into a limit per channel (sends per second, burst).

    Raises:
        ValueError: a part is not ``channel=rate[/burst]`` with numbers in range, or a
            channel is named twice; the message names the part.
    """
    limits: dict[str, RateLimit] = {}
    for part, channel, rest in _channel_pairs(raw, "channel=rate or channel=rate/burst"):
        rate, slash, burst = (s.strip() for s in rest.partition("/"))
        if not (rate and (burst or not slash)):
            raise ValueError(f"{part!r} is not channel=rate or channel=rate/burst")
        try:
            limits[channel] = RateLimit.per_second(_number(rate), _number(burst) if burst else None)
        except ValueError as exc:
            raise ValueError(f"{part!r}: {exc}") from None
    return limits


def parse_max_attempts(raw: str) -> dict[str, int]:
    """Parse ``email=8,sms=3`` into the attempts per channel before a delivery is dead.

    Raises:
        ValueError: a part is not ``channel=N`` with N from 1 to 100, or a channel is
            named twice; the message names the part.
    """
    attempts: dict[str, int] = {}
    for part, channel, value in _channel_pairs(raw, "channel=N"):
        if not value.isdigit() or not 1 <= int(value) <= 100:
            raise ValueError(f"{part!r}: the attempts must be a whole number from 1 to 100")
        attempts[channel] = int(value)
    return attempts


def _channel_pairs(raw: str, form: str) -> list[tuple[str, str, str]]:
    """Split ``a=x,b=y`` into (part, channel, value), refusing bad names and repeats."""
    pairs: list[tuple[str, str, str]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        channel, eq, value = (s.strip() for s in part.partition("="))
        if not (eq and channel and value):
            raise ValueError(f"{part!r} is not {form}")
        if not channel.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{part!r}: the channel name {channel!r} has characters other than letters, digits, '-' and '_'")
        if any(channel == seen for _, seen, _ in pairs):
            raise ValueError(f"{part!r}: the channel {channel!r} is named twice")
        pairs.append((part, channel, value))
    return pairs


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    return value


def _secret(raw: str) -> str:
    if len(raw) < 32:
        raise ValueError(f"it is {len(raw)} characters long; at least 32 are needed")
    return raw


def _public_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("the scheme must be http:// or https://")
    return raw.rstrip("/")


_VARIABLES: tuple[Variable, ...] = (
    ("DATABASE_URL", "database_url", _database_url,
     "a SQLAlchemy URL such as postgresql+psycopg://user@host:5432/db or sqlite:///journey.db"),
    ("REDIS_URL", "redis_url", _redis_url, "a URL such as redis://127.0.0.1:6379/0"),
    ("BROKER_URL", "broker_url", _broker_url,
     "a URL such as amqp://guest:guest@127.0.0.1:5672/ (RabbitMQ) or redis://127.0.0.1:6379/0 (Redis); "
     "unset, REDIS_URL is the broker"),
    ("JOURNEY_NAMESPACE", "namespace", _namespace, "letters, digits, '-' or '_'"),
    ("JOURNEY_SWEEP_AFTER", "sweep_after", parse_duration, DURATION_HELP),
    ("JOURNEY_SWEEP_INTERVAL", "sweep_interval", parse_duration, DURATION_HELP),
    ("JOURNEY_WORKER_PROCESSES", "worker_processes", _positive_int, "a whole number >= 1"),
    ("JOURNEY_WORKER_THREADS", "worker_threads", _positive_int, "a whole number >= 1"),
    ("JOURNEY_DB_POOL_SIZE", "db_pool_size", _positive_int, "a whole number >= 1"),
    ("JOURNEY_KEY_CACHE", "key_cache", parse_duration, DURATION_HELP),
    ("LOG_LEVEL", "log_level", _log_level, "DEBUG, INFO, WARNING or ERROR"),
    ("JOURNEY_FREQUENCY_CAP", "frequency_caps", parse_frequency_caps,
     "channel=max/duration pairs separated by commas, such as email=3/1d,sms=2/1d"),
    ("JOURNEY_SECRET", "secret", _secret, "a random string of at least 32 characters"),
    ("JOURNEY_PUBLIC_URL", "public_url", _public_url, "a URL such as https://journeys.example.com"),
    ("CHANNEL_RATE_LIMITS", "rate_limits", parse_rate_limits,
     "channel=rate or channel=rate/burst pairs separated by commas, such as email=10/20,sms=2.5 "
     "(sends per second; the burst defaults to the rate, at least 1)"),
    ("CHANNEL_MAX_ATTEMPTS", "max_attempts", parse_max_attempts,
     "channel=N pairs separated by commas, such as email=8,sms=3 (attempts before a delivery is dead, "
     "1 to 100; 5 for a channel not named)"),
)
