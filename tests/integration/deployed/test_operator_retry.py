"""An operator retries a dead email once its SMTP server is back: the Procfile's processes,
``journey deliveries retry`` as a command, the message judged at the SMTP peer.

The deployment's SMTP_URL names a loopback port nothing listens on, and
``CHANNEL_MAX_ATTEMPTS=email=1``: the receipt's one attempt fails and it is ``dead``.
Then an SMTP peer starts on that port, the operator runs ``journey deliveries retry
--status dead``, and the receipt arrives, reads ``sent``, is in the trace, and the action
is in ``journey audit``. The same with the operator in the web console of ``journey serve``
(signed in with an admin key, the row's Retry): the receipt arrives, the audit log names the key.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.deployed.deployment import JOURNEYS, Deployment, smtp_down, smtp_later
from tests.integration.conftest import eventually
from tests.unit.console_helpers import csrf_of, form_token

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp_port() -> int:
    """The port the SMTP server will listen on, once it is up."""
    return free_port()


@pytest.fixture
def deployment(tmp_path, smtp_port: int) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    """serve, worker and scheduler, configured by the environment; the SMTP server down."""
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    shutil.copy(JOURNEYS / "order_receipt.yaml", journeys)
    with smtp_down(tmp_path, journeys, smtp_port) as running:
        yield running


@pytest.fixture
def mailbox(smtp_port: int) -> Iterator[Any]:
    """Start the SMTP server on its port when called; stop it after the test."""
    with smtp_later(smtp_port) as start:
        yield start


def receipt(deployment: Deployment) -> Any:
    return deployment.rows("SELECT id, status, attempts, error FROM deliveries")


def test_a_dead_email_is_retried_once_its_server_is_back_and_arrives(deployment: Deployment, mailbox):
    # Given a receipt that went dead: its SMTP server was down and email has one attempt
    answer = httpx.post(f"{deployment.url}/v1/batch", auth=(deployment.write_key, ""), json={"batch": [
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com", "first_name": "Ada"}},
        {"type": "track", "userId": "ada", "event": "order_completed", "properties": {"order_id": "o-7"}}]})
    assert answer.json() == {"success": True}, answer.text
    [dead] = eventually(lambda: receipt(deployment), lambda rows: [r.status for r in rows] == ["dead"], "a dead receipt")
    assert "cannot reach" in dead.error

    # When the server is back and the operator retries the dead deliveries
    box = mailbox()
    done = deployment.journey("deliveries", "retry", "--status", "dead", "--json")
    assert done.returncode == 0, done.stdout + done.stderr

    # Then the receipt arrives once, reads sent, is in the trace, and the action in the audit log
    [message] = eventually(lambda: list(box.messages), lambda found: len(found) >= 1, "the receipt at the SMTP peer")
    [row] = eventually(lambda: receipt(deployment), lambda rows: [r.status for r in rows] == ["sent"], "sent")
    trace = deployment.journey("trace", "ada", "--json")
    [entry] = json.loads(deployment.journey("audit", "--json").stdout)
    assert (json.loads(done.stdout)["acted"], message["To"], row.attempts, len(box.messages)) == (
        1, "ada@example.com", 1, 1)
    assert "delivery retried" in trace.stdout
    assert (entry["action"], entry["selection"], entry["acted"], entry["actor"].startswith("cli:"),
            entry["finishedAt"] is not None) == ("deliveries.retry", {"filter": {"status": "dead"}}, 1, True, True)


def test_a_dead_email_retried_from_the_console_arrives(deployment: Deployment, mailbox):
    # Given a receipt that went dead, and an operator signed in to `journey serve`'s console with an admin key
    answer = httpx.post(f"{deployment.url}/v1/batch", auth=(deployment.write_key, ""), json={"batch": [
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com", "first_name": "Ada"}},
        {"type": "track", "userId": "ada", "event": "order_completed", "properties": {"order_id": "o-8"}}]})
    assert answer.json() == {"success": True}, answer.text
    [dead] = eventually(lambda: receipt(deployment), lambda rows: [r.status for r in rows] == ["dead"], "a dead receipt")
    key = deployment.journey("keys", "create", "ops", "--admin").stdout.split()[0]
    with httpx.Client(base_url=deployment.url) as browser:
        form = browser.get("/console/login").text
        token = form_token(form)
        assert browser.post("/console/login", data={"key": key, "form_token": token}).status_code == 303
        page = browser.get("/console/deliveries", params={"status": "dead"}).text
        assert f'data-test="delivery-row" data-id="{dead.id}" data-status="dead"' in page
        csrf = csrf_of(page)

        # When the SMTP server is back and the operator presses the row's Retry
        box = mailbox()
        done = browser.post("/console/deliveries/retry", data={"csrf": csrf, "only": str(dead.id),
                                                               "back": "/console/deliveries?status=dead"})
        assert done.status_code == 303, done.text
        assert "Done: deliveries.retry on 1 row" in browser.get(done.headers["location"]).text

    # Then the receipt arrives once, reads sent, and the audit log names the console user's key
    [message] = eventually(lambda: list(box.messages), lambda found: len(found) >= 1, "the receipt at the SMTP peer")
    eventually(lambda: receipt(deployment), lambda rows: [r.status for r in rows] == ["sent"], "sent")
    [entry] = json.loads(deployment.journey("audit", "--json").stdout)
    assert (message["To"], len(box.messages), entry["action"], entry["selection"], entry["actor"].endswith("(ops)")) == (
        "ada@example.com", 1, "deliveries.retry", {"ids": [dead.id]}, True)
