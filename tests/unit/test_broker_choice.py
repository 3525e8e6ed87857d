"""BROKER_URL chooses the broker: RabbitMQ (amqp://) or Redis, REDIS_URL's Redis when unset.

Nothing here connects: a broker connects on first use, and these tests only build them.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from engine import ConfigError
from engine.cli.codes import RET_CONFIG, RET_SERVICE
from engine.environment import read_settings
from engine.ratelimit import InProcessRateLimiter, RedisRateLimiter
from engine.settings import Settings
from engine.workers.broker import RABBITMQ_BLOCKED_TIMEOUT, RABBITMQ_CONNECT_TIMEOUT, NamespacedRabbitmqBroker, make_broker
from tests.conftest import close_services, free_port, make_services

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def test_without_broker_url_redis_url_is_the_broker_as_before():
    settings = read_settings({"REDIS_URL": "redis://cache:6379/1"})
    assert (settings.queue_url, settings.is_rabbitmq, settings.broker_variable) == ("redis://cache:6379/1", False, "REDIS_URL")
    broker = make_broker(settings)
    assert isinstance(broker, RedisBroker)
    broker.close()
    assert isinstance(make_broker(read_settings({})), StubBroker)


def test_an_amqp_broker_url_is_rabbitmq_with_confirms_and_the_namespace_as_queue_prefix():
    settings = read_settings({"BROKER_URL": AMQP, "REDIS_URL": "redis://cache:6379/1", "JOURNEY_NAMESPACE": "shop"})
    assert (settings.queue_url, settings.is_rabbitmq, settings.broker_variable) == (AMQP, True, "BROKER_URL")
    broker = make_broker(settings)
    assert isinstance(broker, NamespacedRabbitmqBroker)
    assert broker.confirm_delivery
    assert broker.wire_name("deliveries.email") == "shop.deliveries.email"
    # Dead letters go to the prefixed .XQ, where RabbitMQ would otherwise drop them unroutable
    assert broker._build_queue_arguments("events")["x-dead-letter-routing-key"] == "shop.events.XQ"
    [parameters] = broker.all_parameters
    assert (parameters.socket_timeout, parameters.blocked_connection_timeout) == (RABBITMQ_CONNECT_TIMEOUT, RABBITMQ_BLOCKED_TIMEOUT)


def test_timeouts_the_url_sets_are_kept_and_every_server_of_a_failover_list_is_used():
    broker = make_broker(Settings(broker_url="amqp://a/?socket_timeout=2;amqp://b:5673/", namespace="n"))
    assert isinstance(broker, NamespacedRabbitmqBroker)
    first, second = broker.all_parameters
    assert (first.host, first.socket_timeout, second.host, second.port) == ("a", 2, "b", 5673)
    assert second.socket_timeout == RABBITMQ_CONNECT_TIMEOUT


class RecordingChannel:
    """Stands for a pika channel: records the names the broker sends to the server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.is_open = True

    def queue_declare(self, queue: str, **options: Any) -> None:
        self.calls.append(("declare", queue))

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, **options: Any) -> None:
        self.calls.append(("publish", routing_key))


def test_the_server_sees_prefixed_names_while_the_engine_sees_plain_ones():
    broker = NamespacedRabbitmqBroker(AMQP, "shop")
    channel = RecordingChannel()
    broker.state.channel = channel  # the current thread's channel, as the broker's own property keeps it
    broker.channels.add(channel)
    message = broker.enqueue(_message("events"))
    broker.enqueue(_message("deliveries.sms"), delay=1000)
    assert message.queue_name == "events"
    assert channel.calls == [
        ("declare", "shop.events"), ("declare", "shop.events.DQ"), ("declare", "shop.events.XQ"), ("publish", "shop.events"),
        ("declare", "shop.deliveries.sms"), ("declare", "shop.deliveries.sms.DQ"), ("declare", "shop.deliveries.sms.XQ"),
        ("publish", "shop.deliveries.sms.DQ"),
    ]
    assert broker.get_declared_queues() == {"events", "deliveries.sms"}


def _message(queue: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=([1],), kwargs={}, options={})


@pytest.mark.parametrize(("value", "reason"), [
    ("http://mq:5672/", "the scheme must be amqp:// or amqps:// (RabbitMQ), or redis://, rediss:// or unix:// (Redis)"),
    ("amqp://guest:hunter2@mq:port/", "Port could not be cast to integer value as 'port'"),
    ("amqp://mq/?heartbeat=often", "Invalid heartbeat value 'often'"),
])
def test_a_bad_broker_url_names_the_variable_the_problem_and_an_example(value, reason):
    with pytest.raises(ConfigError) as caught:
        read_settings({"BROKER_URL": value})
    said = str(caught.value)
    assert said.startswith("BROKER_URL=") and reason in said
    assert "expected a URL such as amqp://guest:guest@127.0.0.1:5672/ (RabbitMQ) or redis://127.0.0.1:6379/0 (Redis)" in said
    assert "hunter2" not in said


def test_rate_limits_beside_rabbitmq_need_redis_url_to_be_shared():
    with pytest.raises(ConfigError) as caught:
        read_settings({"BROKER_URL": AMQP, "CHANNEL_RATE_LIMITS": "email=10"})
    assert str(caught.value) == (
        "CHANNEL_RATE_LIMITS needs REDIS_URL when BROKER_URL is RabbitMQ: the limits are shared by every worker "
        "process through Redis; set REDIS_URL (such as redis://127.0.0.1:6379/0), or unset CHANNEL_RATE_LIMITS"
    )


def test_beside_rabbitmq_the_rate_limits_are_kept_in_redis_url(sqlite_url):
    limited = make_services(sqlite_url, broker_url=AMQP, redis_url="redis://127.0.0.1:6379/0",
                            rate_limits=read_settings({"CHANNEL_RATE_LIMITS": "email=10"}).rate_limits)
    unlimited = make_services(sqlite_url, broker_url=AMQP)
    try:
        assert isinstance(limited.rate_limiter, RedisRateLimiter)
        assert isinstance(unlimited.rate_limiter, InProcessRateLimiter)
    finally:
        close_services(limited)
        close_services(unlimited)


def test_a_bad_broker_url_stops_a_process_with_one_line_and_the_config_code(sqlite_url, tmp_path):
    # When `journey worker` starts with a BROKER_URL that is not a broker's
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": sqlite_url, "BROKER_URL": "rabbitmq://guest@mq:5672/"}
    started = subprocess.run([sys.executable, "-m", "engine", "worker"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
    # Then it says which variable, what is wrong and what to write, without a traceback
    assert started.returncode == RET_CONFIG, started.stderr
    assert started.stderr.startswith("Error: BROKER_URL='rabbitmq://guest@mq:5672/' is invalid: the scheme must be amqp://")
    assert "Traceback" not in started.stderr


def test_a_worker_without_any_broker_names_both_variables(sqlite_url, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": sqlite_url}
    started = subprocess.run([sys.executable, "-m", "engine", "worker"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
    assert started.returncode == RET_SERVICE
    assert "set REDIS_URL (Redis) or BROKER_URL (amqp://... for RabbitMQ)" in started.stderr


def test_journey_queues_with_rabbitmq_down_says_which_broker_in_one_line(sqlite_url, tmp_path):
    # Given a migrated database and a BROKER_URL where no RabbitMQ listens
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": sqlite_url}
    assert subprocess.run([sys.executable, "-m", "engine", "db", "upgrade"], env=env, cwd=tmp_path, timeout=120,
                          capture_output=True).returncode == 0
    env["BROKER_URL"] = f"amqp://guest:secret@127.0.0.1:{free_port()}/"
    # When an operator asks what waits
    done = subprocess.run([sys.executable, "-m", "engine", "queues"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    # Then one line says which broker could not be read (without the password) and what to check
    assert done.returncode == RET_SERVICE
    [said] = done.stderr.splitlines()
    assert said.startswith("Error: could not read the queues from RabbitMQ at amqp://127.0.0.1:")
    assert said.endswith("is BROKER_URL right and RabbitMQ up?") and "secret" not in said
