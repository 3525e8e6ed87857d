"""Real processes for integration tests: ``journey serve`` and ``journey worker``
against the real PostgreSQL and Redis, on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from engine.demo import wait_for_http
from engine.services import Services
from tests.conftest import REDIS_URL, create_key, free_port, make_services

pytestmark = pytest.mark.integration

T = TypeVar("T")


@dataclass
class RunningEngine:
    """An engine running as real processes; ``services`` inspects its database."""

    url: str
    write_key: str
    admin_key: str
    services: Services
    env: dict[str, str]


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``python -m engine ARGS`` with ``env``."""
    return subprocess.Popen([sys.executable, "-m", "engine", *args], env=env)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process politely, then firmly."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def engine_env(pg_url: str, redis_namespace: str) -> dict[str, str]:
    """The environment of this test's engine processes."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=pg_url,
        REDIS_URL=REDIS_URL,
        JOURNEY_NAMESPACE=redis_namespace,
        JOURNEY_WORKER_PROCESSES="1",
        JOURNEY_WORKER_THREADS="4",
        LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture
def running_engine(engine_env: dict[str, str]) -> Iterator[RunningEngine]:
    """``journey serve`` and ``journey worker`` on PostgreSQL and Redis."""
    services = make_services(engine_env["DATABASE_URL"], redis_url=REDIS_URL, namespace=engine_env["JOURNEY_NAMESPACE"])
    write_key = create_key(services, "sdk-app")
    admin_key = create_key(services, "ops", admin=True)
    port = free_port()
    web = spawn(["serve", "--port", str(port)], engine_env)
    worker = spawn(["worker"], engine_env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", web)
        yield RunningEngine(url, write_key, admin_key, services, engine_env)
    finally:
        stop(web)
        stop(worker)
        services.close()


def eventually(probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 60.0) -> T:
    """Poll ``probe`` until ``done`` holds for its value; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {value!r} after {timeout:.0f}s")
        time.sleep(0.2)
