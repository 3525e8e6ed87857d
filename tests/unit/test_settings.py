"""Settings are read from the environment; a bad value names the variable and what it expects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import ConfigError, Settings
from engine.durations import format_duration, parse_duration


def test_defaults_are_the_embedded_engine():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///journey.db"
    assert settings.redis_url is None
    assert settings.is_sqlite


def test_values_are_read_and_converted():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgres://app@db:5432/journeys",
            "REDIS_URL": "redis://cache:6379/1",
            "JOURNEY_SWEEP_AFTER": "5m",
            "JOURNEY_WORKER_THREADS": "16",
            "LOG_LEVEL": "debug",
        }
    )
    assert settings.database_url == "postgresql+psycopg://app@db:5432/journeys"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.sweep_after == timedelta(minutes=5)
    assert settings.worker_threads == 16
    assert settings.log_level == "DEBUG"
    assert not settings.is_sqlite


def test_every_bad_value_is_named_at_once():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"REDIS_URL": "localhost:6379", "JOURNEY_SWEEP_AFTER": "2 minutes", "JOURNEY_WORKER_THREADS": "0"}
        )
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("REDIS_URL='localhost:6379' is invalid: the scheme must be redis://")
    assert lines[1].startswith("JOURNEY_SWEEP_AFTER='2 minutes' is invalid: '2 minutes' is not a duration")
    assert "expected a duration such as 30s" in lines[1]
    assert lines[2] == "JOURNEY_WORKER_THREADS='0' is invalid: it must be at least 1; expected a whole number >= 1"


def test_unsupported_database_is_refused():
    with pytest.raises(ConfigError, match="DATABASE_URL='mysql://x' is invalid: only PostgreSQL and SQLite"):
        Settings.from_env({"DATABASE_URL": "mysql://x"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("3d", timedelta(days=3)), ("1d12h", timedelta(days=1, hours=12)), ("2w", timedelta(weeks=2))],
)
def test_durations_round_trip(text, expected):
    assert parse_duration(text) == expected
    assert format_duration(expected) == text


@pytest.mark.parametrize("text", ["3 days", "", "d3", "1.5h", "-1d"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(ValueError, match="is not a duration; write a duration such as 30s"):
        parse_duration(text)
