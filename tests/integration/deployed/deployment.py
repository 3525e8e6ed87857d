"""The deployed suite's pieces: the peers, the running deployment, the SDKs, the customers.

Fixtures that assemble them are in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from engine.delivery import UNSETTLED
from engine.demo import wait_for_http
from tests.conftest import REDIS_URL, broker_environment, free_port, pg_schema, redis_prefix
from tests.integration.channels.peers import Mailbox, Peers
from tests.integration.conftest import eventually, stop

JOURNEYS = Path(__file__).parent / "journeys"
#: The webhook URL in review_alert.yaml, pointed at the peer when the journeys are deployed.
WEBHOOK_PLACEHOLDER = "http://webhook.peer.invalid"
#: Where the unsubscribe links point: the deployment's TLS proxy, for which the tests stand in.
PUBLIC_URL = "https://journeys.shop.example"


@dataclass
class Deployment:
    """The running processes, their environment, the peers, and a read-only look at the database."""

    url: str
    env: dict[str, str]
    peers: Peers
    write_key: str
    logs: Path
    database: sa.Engine
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def journey(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``journey ARGS`` as an operator would, in this deployment's environment."""
        return subprocess.run([sys.executable, "-m", "engine", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def start(self, name: str, *args: str) -> None:
        """Start ``journey ARGS`` in the background, its output in ``logs/NAME.log``."""
        with open(self.logs / f"{name}.log", "wb") as output:
            self.processes[name] = subprocess.Popen([sys.executable, "-m", "engine", *args], env=self.env,
                                                    stdout=output, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def rows(self, statement: str, **params: Any) -> list[Any]:
        """Rows of a SQL query on the engine's database (to judge, never to change anything)."""
        with self.database.connect() as connection:
            return list(connection.execute(sa.text(statement), params))

    def deliveries(self, customer: str) -> list[Any]:
        """The customer's deliveries: journey, step, channel, status, key, error; oldest first."""
        return self.rows(
            "SELECT d.journey_id, d.step, d.channel, d.status, d.key, d.error FROM deliveries d"
            " JOIN customers c ON c.id = d.customer_id WHERE c.external_id = :customer ORDER BY d.id",
            customer=customer,
        )

    def settled(self, customer: str, count: int) -> list[Any]:
        """Wait until the customer has ``count`` deliveries and none is pending or being sent; return them."""
        return eventually(lambda: self.deliveries(customer),
                          lambda rows: len(rows) == count and all(r.status not in UNSETTLED for r in rows),
                          f"deliveries of {customer}")

    def stop_all(self) -> None:
        for process in self.processes.values():
            stop(process)


@contextmanager
def deployed(home: Path, peers: Peers, broker: str) -> Iterator[Deployment]:
    """The Procfile's processes on ``broker`` ("redis" or "rabbitmq"), configured by the environment alone.

    A PostgreSQL schema and a broker namespace of their own; the journeys of ``JOURNEYS``
    deployed with ``journey deploy``, a write key made with ``journey keys create``.
    """
    logs = home / "logs"
    logs.mkdir()
    journeys = home / "journeys"
    shutil.copytree(JOURNEYS, journeys)
    review = journeys / "review_alert.yaml"
    review.write_text(review.read_text().replace(WEBHOOK_PLACEHOLDER, peers.webhook.url))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pg_schema() as database_url, broker_environment(broker) as on_broker:
        env = {
            **{name: value for name, value in os.environ.items() if name not in ("REDIS_URL", "BROKER_URL")},
            "DATABASE_URL": database_url, **on_broker,
            # Behind its TLS proxy (one-click unsubscribe needs https): the tests stand in for
            # the proxy and send the links' paths to ``journey serve``.
            "JOURNEY_PUBLIC_URL": PUBLIC_URL,
            "JOURNEY_SECRET": "deployed-suite-secret-" + "s" * 32,
            "JOURNEY_WORKER_PROCESSES": "1", "JOURNEY_WORKER_THREADS": "4",
            "LOG_LEVEL": "INFO",
            **peers.environment(),
        }
        database = sa.create_engine(database_url)
        running = Deployment(url, env, peers, "", logs, database)
        try:
            for args in (["db", "upgrade"], ["deploy", str(journeys)]):
                done = running.journey(*args)
                assert done.returncode == 0, f"journey {' '.join(args)}: {done.stdout}{done.stderr}"
            created = running.journey("keys", "create", "sdk-app")
            assert created.returncode == 0, created.stderr
            running.write_key = created.stdout.split()[0]
            running.start("web", "serve", "--port", str(port))
            running.start("worker", "worker")
            running.start("scheduler", "scheduler")
            wait_for_http(f"{url}/health", running.processes["web"], timeout=120)  # a busy machine starts slowly
            yield running
        finally:
            running.stop_all()
            database.dispose()



@contextmanager
def smtp_down(home: Path, journeys: Path, smtp_port: int) -> Iterator[Deployment]:
    """serve, worker and scheduler running ``journeys``, configured by the environment, with a
    write key; their SMTP_URL names ``smtp_port``, where nothing listens yet, and email has one
    attempt (``CHANNEL_MAX_ATTEMPTS=email=1``), so an email sent before its server is up goes dead."""
    logs = home / "logs"
    logs.mkdir()
    port = free_port()
    with pg_schema() as database_url, redis_prefix() as namespace:
        env = {
            **os.environ,
            "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "JOURNEY_NAMESPACE": namespace,
            "JOURNEY_SECRET": "operator-suite-secret-" + "s" * 32,
            "JOURNEY_WORKER_PROCESSES": "1", "JOURNEY_WORKER_THREADS": "2", "LOG_LEVEL": "INFO",
            "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}", "EMAIL_FROM": "Shop <news@shop.example>",
            "CHANNEL_TIMEOUT": "5s", "CHANNEL_MAX_ATTEMPTS": "email=1",
        }
        database = sa.create_engine(database_url)
        running = Deployment(f"http://127.0.0.1:{port}", env, None, "", logs, database)  # type: ignore[arg-type]
        try:
            for args in (["db", "upgrade"], ["deploy", str(journeys)]):
                done = running.journey(*args)
                assert done.returncode == 0, f"journey {' '.join(args)}: {done.stdout}{done.stderr}"
            running.write_key = running.journey("keys", "create", "shop").stdout.split()[0]
            running.start("web", "serve", "--port", str(port))
            running.start("worker", "worker")
            running.start("scheduler", "scheduler")
            wait_for_http(f"{running.url}/health", running.processes["web"], timeout=120)
            yield running
        finally:
            running.stop_all()
            database.dispose()


@contextmanager
def smtp_later(smtp_port: int) -> Iterator[Callable[[], Mailbox]]:
    """A function that starts an SMTP server on ``smtp_port`` (once) and returns its mailbox; stopped on leaving."""
    started: list[Controller] = []
    box = Mailbox()

    def start() -> Mailbox:
        if not started:
            controller = Controller(box, hostname="127.0.0.1", port=smtp_port)
            controller.start()
            started.append(controller)
        return box

    try:
        yield start
    finally:
        for controller in started:
            controller.stop()


# -- the SDKs that send events --------------------------------------------------------------


class Sdk(Protocol):
    """What a test does with an analytics SDK; one implementation per real SDK."""

    name: str

    def identify(self, user_id: str, traits: dict[str, Any]) -> None: ...
    def track(self, user_id: str, event: str, properties: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class SegmentSdk:
    """The real Segment Python SDK (``segment-analytics-python``), pointed at the engine."""

    name = "segment"

    def __init__(self, url: str, write_key: str) -> None:
        self.errors: list[Exception] = []
        self.client = SegmentClient(write_key, host=url, on_error=lambda error, _batch: self.errors.append(error),
                                    max_retries=2)

    def identify(self, user_id: str, traits: dict[str, Any]) -> None:
        ok, _ = self.client.identify(user_id=user_id, traits=traits)
        assert ok

    def track(self, user_id: str, event: str, properties: dict[str, Any]) -> None:
        ok, _ = self.client.track(user_id=user_id, event=event, properties=properties)
        assert ok

    def flush(self) -> None:
        """Return once everything queued was uploaded; fail if the engine refused any of it."""
        self.client.flush()
        assert self.errors == []

    def close(self) -> None:
        self.client.flush()
        self.client.join()


class RudderStackSdk(SegmentSdk):
    """The real RudderStack Python SDK (``rudder-sdk-python``), its data plane URL the engine.

    Its client has the Segment client's calls (it began as a fork); what it sends differs
    (gzip, traits in ``context.traits``: docs/ingestion.md), which is what running every
    test through it checks.
    """

    name = "rudderstack"

    def __init__(self, url: str, write_key: str) -> None:
        self.errors = []
        self.client = RudderClient(write_key, host=url, on_error=lambda error, _batch: self.errors.append(error),
                                   max_retries=2)


#: The SDKs every test runs with, by name. Another SDK is one class and one line here.
SDKS: dict[str, Callable[[str, str], Sdk]] = {"segment": SegmentSdk, "rudderstack": RudderStackSdk}



@dataclass(frozen=True)
class Person:
    """A customer of one test: a unique user id, and the traits the channels need."""

    id: str
    first_name: str

    @property
    def email(self) -> str:
        return f"{self.id}@example.com"

    @property
    def phone(self) -> str:
        return "+4477009" + str(int(self.id.rsplit("-", 1)[1], 16) % 100000).zfill(5)

    @property
    def push_token(self) -> str:
        return f"fcm-{self.id}"

    def traits(self) -> dict[str, Any]:
        return {"first_name": self.first_name, "email": self.email, "phone": self.phone,
                "push_token": self.push_token}


