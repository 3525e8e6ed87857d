"""The engine as deployed: the Procfile's processes, configured only by the environment.

Once per module: a PostgreSQL schema and a Redis prefix of its own; real peers on
loopback (aiosmtpd for email, HTTP servers standing for the SMS, push, audience and
webhook APIs); ``journey db upgrade``, ``journey keys create`` and ``journey deploy``
run as commands; then ``journey serve``, ``journey worker`` and ``journey scheduler``
run as subprocesses with nothing but environment variables. No services are built here:
the database is only read, to judge. Events come from a real SDK (the ``sdk`` fixture,
one implementation per SDK), and every test has customers of its own.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from engine.demo import wait_for_http
from tests.conftest import REDIS_URL, free_port, pg_schema, redis_prefix
from tests.integration.channels.peers import Peers, provider_peers
from tests.integration.deployed.deployment import (
    JOURNEYS, PUBLIC_URL, SDKS, WEBHOOK_PLACEHOLDER, Deployment, Person, Sdk,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    """An SMTP peer and four HTTP peers answering as their providers do."""
    with provider_peers() as peers:
        yield peers


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, peers: Peers) -> Iterator[Deployment]:
    """Given the Procfile's processes running, configured by the environment alone."""
    home = tmp_path_factory.mktemp("deployed")
    logs = home / "logs"
    logs.mkdir()
    journeys = home / "journeys"
    shutil.copytree(JOURNEYS, journeys)
    review = journeys / "review_alert.yaml"
    review.write_text(review.read_text().replace(WEBHOOK_PLACEHOLDER, peers.webhook.url))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pg_schema() as database_url, redis_prefix() as namespace:
        env = {
            **os.environ,
            "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "JOURNEY_NAMESPACE": namespace,
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



@pytest.fixture(params=sorted(SDKS))
def sdk(request: pytest.FixtureRequest, deployment: Deployment) -> Iterator[Sdk]:
    """A real analytics SDK sending to the deployment's ``journey serve``."""
    client = SDKS[request.param](deployment.url, deployment.write_key)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def person(sdk: Sdk) -> Callable[[str], Person]:
    """Make a customer of this test's own, identified through the SDK with their traits."""

    def make(first_name: str) -> Person:
        someone = Person(f"{first_name.lower()}-{sdk.name}-{uuid.uuid4().hex[:8]}", first_name)
        sdk.identify(someone.id, someone.traits())
        return someone

    return make


