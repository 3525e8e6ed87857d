"""Fixtures for the twin (SQLite, StubBroker) and the real thing (PostgreSQL, Redis, RabbitMQ).

A real service that is unreachable skips its tests locally and fails them under CI.
Each test owns its namespace: its own SQLite file or PostgreSQL schema, and its own
Redis key prefix or RabbitMQ queue-name prefix, so tests can run in any order.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import dramatiq
import pika.exceptions
import pytest
import redis
import sqlalchemy as sa
from starlette.testclient import TestClient

from channels import registry
from channels.settings import ChannelSettings
from engine import keys
from engine.api import create_app
from engine.services import Services
from engine.settings import Settings
from engine.storage.db import upgrade
from engine.workers.actors import queue_names
from engine.workers.broker import NamespacedRabbitmqBroker

CI = bool(os.environ.get("CI"))
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


# Fixtures that reach a real service: a test that uses one belongs to the integration suite.
REAL_SERVICE_FIXTURES = frozenset({"pg_url", "pg_services", "redis_namespace", "redis_services", "rabbitmq_namespace", "rabbitmq_services"})
REAL_SERVICE_CASES = REAL_SERVICE_FIXTURES | {"postgresql", "redis", "rabbitmq"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--integration", action="store_true", default=False,
        help="run the integration suite (real PostgreSQL, Redis, processes and peers) instead of the unit suite",
    )


def is_integration(item: pytest.Item) -> bool:
    """A test marked ``integration``, under tests/integration, or using a real service."""
    if item.get_closest_marker("integration") or "integration" in item.path.parts:
        return True
    if REAL_SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    # Parametrized over a real service's case (any_services' "postgresql", a limiter's "redis")
    # or over fixture names fetched with `request.getfixturevalue(url)`.
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(isinstance(value, str) and value in REAL_SERVICE_CASES for value in params.values())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what needs a real service, then keep one suite: the unit suite by default,
    the integration suite under ``--integration``; an explicit ``-m`` decides alone."""
    for item in items:
        if is_integration(item) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)
    if config.option.markexpr:
        return
    wanted = config.getoption("--integration")
    keep = [item for item in items if is_integration(item) == wanted]
    dropped = [item for item in items if is_integration(item) != wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    if config.option.markexpr:
        return f"suite: -m {config.option.markexpr!r}"
    if config.getoption("--integration"):
        return "suite: integration (real PostgreSQL, Redis, processes and loopback peers)"
    return "suite: unit (SQLite and the StubBroker; `pytest --integration` runs the integration suite)"


def unavailable(what: str, exc: BaseException) -> None:
    """Skip locally, fail under CI: integration tests must not pass by skipping there."""
    message = f"{what} is unreachable: {str(exc) or repr(exc)}"
    if CI:
        pytest.fail(message + " (CI is set, so this fails instead of skipping)")
    pytest.skip(message)


def free_port() -> int:
    """Return a TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A fresh SQLite file for this test."""
    return f"sqlite:///{tmp_path}/journey.db"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, as a DATABASE_URL whose search_path is it; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {PG_URL}", exc)
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of its own; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    try:
        yield namespace
    finally:
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        client.close()


@contextmanager
def rabbitmq_prefix() -> Iterator[str]:
    """A RabbitMQ queue-name prefix of its own (a ``JOURNEY_NAMESPACE``); the engine's queues under it are deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    probe = NamespacedRabbitmqBroker(RABBITMQ_URL, namespace)
    try:
        probe.connection  # noqa: B018 - connects, or says RabbitMQ is down
    except pika.exceptions.AMQPError as exc:
        unavailable(f"RabbitMQ at {RABBITMQ_URL}", exc)
    finally:
        probe.close()
    try:
        yield namespace
    finally:
        # A connection of its own: one left idle through a module's tests is closed by RabbitMQ's heartbeat.
        cleaner = NamespacedRabbitmqBroker(RABBITMQ_URL, namespace)
        cleaner.delete_queues(queue_names(registry.available()))
        cleaner.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for this test, as a DATABASE_URL whose search_path is it."""
    with pg_schema() as url:
        yield url


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    with redis_prefix() as namespace:
        yield namespace


#: The brokers a process can be started on, as the variable that names it and its URL.
BROKERS = {"redis": ("REDIS_URL", REDIS_URL), "rabbitmq": ("BROKER_URL", RABBITMQ_URL)}


@contextmanager
def broker_environment(broker: str) -> Iterator[dict[str, str]]:
    """The environment that puts a process on ``broker`` ("redis" or "rabbitmq") under a namespace of its own.

    The namespace's keys or queues are deleted afterwards.
    """
    variable, url = BROKERS[broker]
    with (redis_prefix() if broker == "redis" else rabbitmq_prefix()) as namespace:
        yield {variable: url, "JOURNEY_NAMESPACE": namespace}


@pytest.fixture
def rabbitmq_namespace() -> Iterator[str]:
    """A RabbitMQ queue-name prefix of this test's own; its queues are deleted afterwards."""
    with rabbitmq_prefix() as namespace:
        yield namespace


def make_services(database_url: str, channel_settings: ChannelSettings | None = None, **settings: object) -> Services:
    """Services on ``database_url``, migrated to the newest revision."""
    services = Services.from_settings(Settings(database_url=database_url, **settings), channel_settings)  # type: ignore[arg-type]
    upgrade(services.engine)
    return services


@pytest.fixture
def services(sqlite_url: str) -> Iterator[Services]:
    """The twin: SQLite and the StubBroker."""
    services = make_services(sqlite_url)
    yield services
    close_services(services)


@pytest.fixture
def pg_services(pg_url: str) -> Iterator[Services]:
    """PostgreSQL and the StubBroker."""
    services = make_services(pg_url)
    yield services
    close_services(services)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_services(request: pytest.FixtureRequest) -> Services:
    """The same test on the twin and on real PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("services")
    return request.getfixturevalue("pg_services")


@pytest.fixture
def redis_services(pg_url: str, redis_namespace: str) -> Iterator[Services]:
    """The real thing: PostgreSQL and Redis."""
    services = make_services(pg_url, redis_url=REDIS_URL, namespace=redis_namespace)
    yield services
    close_services(services)


@pytest.fixture
def rabbitmq_services(pg_url: str, rabbitmq_namespace: str) -> Iterator[Services]:
    """The real thing on RabbitMQ: PostgreSQL and BROKER_URL=amqp://..."""
    services = make_services(pg_url, broker_url=RABBITMQ_URL, namespace=rabbitmq_namespace)
    yield services
    close_services(services)


def create_key(services: Services, name: str = "test-app", *, admin: bool = False, scope: str | None = None) -> str:
    """Create an API key (a write key, unless ``admin`` or another ``scope``) and return it in clear."""
    with services.sessions.begin() as session:
        return keys.create_key(session, name, admin=admin, scope=scope)[1]


def drain(services: Services, timeout: float = 30.0) -> None:
    """Process every queued message (events, timers, deliveries) in-process, until none is left.

    Raises:
        TimeoutError: work was still queued after ``timeout`` seconds (a retry loop).
    """
    broker = services.broker
    # One worker per engine for the whole test: a stopped dramatiq Worker stays hooked to
    # its broker and would start consumers for queues declared later, stealing messages.
    worker = getattr(services, "_test_worker", None)
    if worker is None:
        worker = services._test_worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)  # type: ignore[attr-defined]
        worker.start()
    while True:
        for queue in list(broker.queues):  # type: ignore[attr-defined]
            try:
                broker.join(queue, timeout=int(timeout * 1000))  # type: ignore[attr-defined]
            except dramatiq.errors.QueueJoinTimeout:
                state = {name: q.unfinished_tasks for name, q in broker.queues.items()}  # type: ignore[attr-defined]
                raise TimeoutError(f"queue {queue} still busy after {timeout}s: {state}") from None
        worker.join()
        if all(q.unfinished_tasks == 0 for q in broker.queues.values()):  # type: ignore[attr-defined]
            return


def close_services(services: Services) -> None:
    """Stop the test worker, if ``drain`` started one, and close the services."""
    worker = getattr(services, "_test_worker", None)
    if worker is not None:
        worker.stop()
    services.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """An HTTP client for the API on the twin."""
    with TestClient(create_app(services)) as client:
        yield client


@pytest.fixture
def write_key(services: Services) -> str:
    """A write key on the twin."""
    return create_key(services)


@pytest.fixture
def admin_key(services: Services) -> str:
    """An admin key on the twin."""
    return create_key(services, "ops", admin=True)
