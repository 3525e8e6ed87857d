"""The engine as deployed: the Procfile's processes, configured only by the environment.

Once per module: a PostgreSQL schema and a Redis prefix (a RabbitMQ queue prefix in
test_rabbitmq_broker.py) of its own; real peers on loopback (aiosmtpd for email, HTTP
servers standing for the SMS, push, audience and webhook APIs); ``journey db upgrade``, ``journey keys create`` and ``journey deploy``
run as commands; then ``journey serve``, ``journey worker`` and ``journey scheduler``
run as subprocesses with nothing but environment variables. No services are built here:
the database is only read, to judge. Events come from a real SDK (the ``sdk`` fixture,
one implementation per SDK), and every test has customers of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.integration.channels.peers import Peers, provider_peers
from tests.integration.deployed.deployment import SDKS, Deployment, Person, Sdk, deployed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    """An SMTP peer and four HTTP peers answering as their providers do."""
    with provider_peers() as peers:
        yield peers


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, peers: Peers) -> Iterator[Deployment]:
    """Given the Procfile's processes running on Redis, configured by the environment alone."""
    with deployed(tmp_path_factory.mktemp("deployed"), peers, "redis") as running:
        yield running


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


