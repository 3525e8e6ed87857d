"""Settings are read from the environment; a bad value names the variable and what it expects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import ConfigError, Settings
from engine.durations import format_duration, parse_duration
from engine.ratelimit import RateLimit


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
    assert "a duration such as 30s" in lines[1]
    assert lines[2] == "JOURNEY_WORKER_THREADS='0' is invalid: it must be at least 1; expected a whole number >= 1"


def test_a_hint_the_reason_already_gives_is_not_repeated():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"JOURNEY_SWEEP_AFTER": "2 minutes"})

    assert str(caught.value) == (
        "JOURNEY_SWEEP_AFTER='2 minutes' is invalid: '2 minutes' is not a duration; "
        "write a duration such as 30s, 15m, 1h, 3d, 2w or 1d12h"
    )


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


def test_rate_limits_are_read_per_channel_with_an_optional_burst():
    settings = Settings.from_env({"CHANNEL_RATE_LIMITS": "email=10/20, sms=2.5,webhook=50,push=0.5,"})
    assert settings.rate_limits == {
        "email": RateLimit(10, 20),
        "sms": RateLimit(2.5, 2.5),  # the burst defaults to the rate
        "webhook": RateLimit(50, 50),
        "push": RateLimit(0.5, 1),  # and is at least one send
    }
    assert Settings.from_env({}).rate_limits == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("email", "'email' is not channel=rate or channel=rate/burst"),
        ("email=", "'email=' is not channel=rate or channel=rate/burst"),
        ("=10", "'=10' is not channel=rate or channel=rate/burst"),
        ("email=10/", "'email=10/' is not channel=rate or channel=rate/burst"),
        ("email=ten", "'email=ten': 'ten' is not a number"),
        ("email=10/s", "'email=10/s': 's' is not a number"),
        ("email=10/20/30", "'email=10/20/30': '20/30' is not a number"),
        ("email=inf", "'email=inf': 'inf' is not a finite number"),
        ("email=0", "'email=0': the rate 0 is not between 0.001 and 1000000 sends per second"),
        ("email=-3", "'email=-3': the rate -3 is not between 0.001 and 1000000 sends per second"),
        ("email=10/0.5", "'email=10/0.5': the burst 0.5 is not between 1 and 1000000 sends"),
        ("e mail=10", "'e mail=10': the channel name 'e mail' has characters other than letters"),
        ("email=10,email=20", "'email=20': the channel 'email' is named twice"),
    ],
)
def test_a_bad_rate_limit_names_the_variable_the_part_and_the_form(value, problem):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHANNEL_RATE_LIMITS": value, "JOURNEY_FREQUENCY_CAP": "email=3/1d"})
    message = str(caught.value)
    assert message.startswith(f"CHANNEL_RATE_LIMITS={value!r} is invalid: {problem}")
    assert message.endswith(
        "; expected channel=rate or channel=rate/burst pairs separated by commas, such as email=10/20,sms=2.5 "
        "(sends per second; the burst defaults to the rate, at least 1)"
    )
    assert "\n" not in message


def test_channel_max_attempts_are_read_and_bad_ones_named():
    assert Settings.from_env({"CHANNEL_MAX_ATTEMPTS": "email=8, sms=3"}).max_attempts == {"email": 8, "sms": 3}
    for raw, why in [("email=0", "'email=0': the attempts must be a whole number from 1 to 100"),
                     ("email", "'email' is not channel=N"),
                     ("email=2,email=3", "'email=3': the channel 'email' is named twice")]:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"CHANNEL_MAX_ATTEMPTS": raw})
        assert why in str(caught.value)
        assert "CHANNEL_MAX_ATTEMPTS" in str(caught.value)


def test_a_bad_secret_or_password_is_never_printed():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"JOURNEY_SECRET": "hunter2", "DATABASE_URL": "mysql://ada:hunter2@db/app",
                           "REDIS_URL": "http://ada:hunter2@cache"})
    message = str(caught.value)
    assert "hunter2" not in message
    assert "JOURNEY_SECRET=<hidden> is invalid" in message
    assert "DATABASE_URL='mysql://ada:<hidden>@db/app' is invalid" in message
