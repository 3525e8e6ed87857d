"""The Procfile's processes on RabbitMQ: ``BROKER_URL=amqp://...``, nothing else changed.

The same deployment as the rest of this folder (conftest.py, deployment.py), its broker
the RabbitMQ at ``TEST_RABBITMQ_URL`` with a queue-name prefix of its own. An order's
receipt reaches the SMTP peer and a wait is fired by the scheduler (the same tests as
test_channels.py, imported to run here on RabbitMQ); ``journey queues`` shows what waits
on RabbitMQ while the worker is stopped, and the worker started again sends it; ``GET
/metrics`` reads the queues from RabbitMQ.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.channels.peers import Peers
from tests.integration.conftest import eventually, stop
from tests.integration.deployed.deployment import Deployment, Sdk, deployed
from tests.integration.deployed.test_channels import (  # noqa: F401 - collected here too, on RabbitMQ
    emails_to, sent, test_a_push_goes_out_after_its_wait_fired_by_the_scheduler, test_an_order_gets_its_receipt_by_email,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, peers: Peers) -> Iterator[Deployment]:
    """Given the Procfile's processes running on RabbitMQ, configured by the environment alone."""
    with deployed(tmp_path_factory.mktemp("deployed-rabbitmq"), peers, "rabbitmq") as running:
        yield running


def queues(deployment: Deployment) -> dict[str, dict[str, int | None]]:
    """``journey queues --json``: each queue's figures by name."""
    done = deployment.journey("queues", "--json")
    assert done.returncode == 0, done.stderr
    return {q["name"]: q for q in json.loads(done.stdout)["queues"]}


def test_the_processes_say_they_use_rabbitmq(deployment: Deployment):
    assert deployment.env["BROKER_URL"].startswith("amqp://") and "REDIS_URL" not in deployment.env
    for process in ("worker", "scheduler"):
        said = eventually(lambda: [ln for ln in deployment.log(process).splitlines() if ": broker: " in ln],  # noqa: B023 - called here
                          bool, f"the {process}'s start-up log")[0]
        assert said.endswith(f"journey {process}: broker: RabbitMQ at amqp://127.0.0.1:5672/, "
                             f"namespace {deployment.env['JOURNEY_NAMESPACE']}"), said


def test_journey_queues_shows_what_waits_on_rabbitmq_and_a_restarted_worker_sends_it(deployment: Deployment, sdk: Sdk,
                                                                                      person):
    # Given the worker stopped
    stop(deployment.processes["worker"])
    try:
        eve = person("Eve")
        # When an order comes in
        sdk.track(eve.id, "order_completed", {"order_id": "o-5005"})
        sdk.flush()
        # Then `journey queues` shows its events waiting on RabbitMQ, and cannot tell what is in flight
        waiting = eventually(lambda: queues(deployment), lambda q: (q["events"]["ready"] or 0) >= 1, "events ready")
        assert waiting["events"]["in_flight"] is None
        assert {"events", "timers", "deliveries.email", "deliveries.sms"} <= set(waiting)
        table = deployment.journey("queues")
        assert table.returncode == 0, table.stderr
        [events_row] = [line.split() for line in table.stdout.splitlines() if line.split()[:1] == ["events"]
                        and line.split()[1].isdigit()]  # not the backlog's "events pending N"
        assert int(events_row[1]) >= 1 and events_row[3] == "-", table.stdout
        assert "RabbitMQ: messages workers hold are in no column" in table.stderr
        assert deployment.deliveries(eve.id) == []
    finally:
        # When the worker starts again
        deployment.start("worker", "worker")
    # Then the receipt, waiting in RabbitMQ's durable queue, is sent, and nothing is left waiting
    [row] = sent(deployment, eve.id, 1)
    [receipt] = emails_to(deployment, eve.email, 1)
    assert receipt["Subject"] == "Your order o-5005"
    drained = eventually(lambda: queues(deployment), lambda q: all(v["ready"] == 0 for v in q.values()), "queues drained")
    assert all(v["dead"] == 0 for v in drained.values())


def test_metrics_show_rabbitmq_queues_without_an_in_flight_figure(deployment: Deployment):
    # Given an admin key, made as an operator makes one
    created = deployment.journey("keys", "create", "prometheus", "--admin")
    assert created.returncode == 0, created.stderr
    # When Prometheus scrapes the API
    response = httpx.get(f"{deployment.url}/metrics", auth=(created.stdout.split()[0], ""), timeout=30)
    # Then every queue's ready, delayed and dead messages are there, read from RabbitMQ, and no made-up in-flight count
    assert response.status_code == 200
    lines = response.text.splitlines()
    for state in ("ready", "delayed", "dead"):
        assert any(line.startswith(f'journey_queue_messages{{queue="events",state="{state}"}}') for line in lines), state
    assert not [line for line in lines if 'state="in_flight"' in line]
