"""What a deployment sends, judged where it lands: at the peers standing for the providers.

The Procfile's processes run as subprocesses (see conftest.py); events come from a real
SDK. Each test has customers of its own and waits for its messages to arrive; every
expected message arrives once, with the customer's name and order in it and the headers
the provider needs. A held message is explained by ``journey trace``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import standardwebhooks

from channels.email import message_id
from tests.integration.channels.peers import AUDIENCE_OP, DOMAIN, PUSH_NAME, SENDER, SMS_SID, WEBHOOK_SECRET
from tests.integration.deployed.deployment import PUBLIC_URL, Deployment, Sdk, eventually

pytestmark = pytest.mark.integration


def emails_to(deployment: Deployment, address: str, count: int) -> list[Any]:
    """Wait until ``count`` emails reached the SMTP peer for ``address``; return them, oldest first."""
    return eventually(lambda: [m for m in deployment.peers.smtp.mailbox.messages if m["To"] == address],
                      lambda found: len(found) >= count, f"emails to {address}")


def sent(deployment: Deployment, customer: str, count: int) -> list[Any]:
    """The customer's deliveries once settled, all of them ``sent``."""
    rows = deployment.settled(customer, count)
    assert [(r.status, r.error) for r in rows] == [("sent", None)] * count, rows
    return rows


def test_every_process_logs_its_channels_configured(deployment: Deployment):
    # The worker and the scheduler read the channel settings from the environment
    for process in ("worker", "scheduler"):
        line = eventually(lambda: [ln for ln in deployment.log(process).splitlines() if "channels configured" in ln],  # noqa: B023 - called here
                          bool, f"the {process}'s start-up log")[0]
        assert line.endswith("channels configured: email, log, push, retargeting, sms, webhook"), line


def test_an_order_gets_its_receipt_by_email(deployment: Deployment, sdk: Sdk, person):
    ada = person("Ada")
    sdk.track(ada.id, "order_completed", {"order_id": "o-1001"})
    sdk.flush()

    [row] = sent(deployment, ada.id, 1)  # recorded sent once the SMTP peer accepted it
    [receipt] = emails_to(deployment, ada.email, 1)
    assert (row.journey_id, row.step, row.channel) == ("order_receipt", "receipt", "email")
    assert receipt["Subject"] == "Your order o-1001"
    assert receipt["From"] == SENDER
    assert receipt["Message-ID"] == message_id(row.key, DOMAIN)
    assert receipt.get_body(("plain",)).get_content().strip() == "Hi Ada, thank you for order o-1001."
    assert "List-Unsubscribe" not in receipt  # transactional: no unsubscribe link
    assert len(emails_to(deployment, ada.email, 1)) == 1


def test_a_shipment_is_texted_once(deployment: Deployment, sdk: Sdk, person):
    bob = person("Bob")
    sdk.track(bob.id, "order_shipped", {"order_id": "o-2002"})
    sdk.flush()

    [row] = sent(deployment, bob.id, 1)
    [sms] = [r for r in deployment.peers.sms.requests if parse_qs(r.body.decode())["To"] == [bob.phone]]
    assert sms.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert sms.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:sms-token").decode()
    assert sms.headers["idempotency-key"] == row.key
    assert parse_qs(sms.body.decode()) == {
        "To": [bob.phone], "From": ["+14155550100"], "Body": ["Hi Bob, order o-2002 has shipped."]}
    assert deployment.rows("SELECT provider_id FROM deliveries WHERE key = :key", key=row.key)[0][0] == SMS_SID


def test_a_push_goes_out_after_its_wait_fired_by_the_scheduler(deployment: Deployment, sdk: Sdk, person):
    cy = person("Cy")
    sdk.track(cy.id, "back_in_stock", {"product": "Red shoes"})
    sdk.flush()

    [row] = sent(deployment, cy.id, 1)
    [push] = [r for r in deployment.peers.push.requests if r.json()["message"]["token"] == cy.push_token]
    assert push.path == "/v1/projects/shop/messages:send"
    assert push.headers["authorization"] == "Bearer push-token"
    assert push.json() == {"message": {
        "token": cy.push_token,
        "notification": {"title": "Back in stock, Cy", "body": "Red shoes is back."},
        "data": {"idempotency_key": row.key, "journey_id": "back_in_stock", "step_id": "alert"},
    }}
    # the wait was a timer row, fired (by the scheduler process, the only one that enqueues due timers)
    [(fired,)] = deployment.rows(
        "SELECT t.fired_at IS NOT NULL FROM timers t JOIN enrollments e ON e.id = t.enrollment_id"
        " JOIN customers c ON c.id = e.customer_id WHERE c.external_id = :customer", customer=cy.id)
    assert fired
    assert deployment.rows("SELECT provider_id FROM deliveries WHERE key = :key", key=row.key)[0][0] == PUSH_NAME


def test_a_bad_review_is_posted_to_the_webhook_signed(deployment: Deployment, sdk: Sdk, person):
    dee = person("Dee")
    sdk.track(dee.id, "review_submitted", {"order_id": "o-3003", "rating": 1})
    sdk.flush()

    [row] = sent(deployment, dee.id, 1)
    [hook] = [r for r in deployment.peers.webhook.requests if r.headers.get("webhook-id") == row.key]
    assert hook.path == "/hooks/review"
    assert hook.headers["content-type"] == "application/json"
    assert standardwebhooks.Webhook(WEBHOOK_SECRET).verify(hook.body, hook.headers) == {
        "type": "bad_review", "customer_id": dee.id, "order_id": "o-3003", "rating": 1}


def test_a_product_view_adds_the_customer_to_the_audience(deployment: Deployment, sdk: Sdk, person):
    eve = person("Eve")
    sdk.track(eve.id, "product_viewed", {"sku": "SKU-1"})
    sdk.flush()

    [row] = sent(deployment, eve.id, 1)
    member = {"email_sha256": _sha256(eve.email), "phone_sha256": _sha256(eve.phone),
              "external_id_sha256": _sha256(eve.id)}
    [call] = [r for r in deployment.peers.audience.requests if r.json()["members"] == [member]]
    assert call.path == "/audiences/viewers/members"
    assert call.headers["authorization"] == "Bearer audience-token"
    assert call.headers["idempotency-key"] == row.key
    assert call.json()["action"] == "add"
    assert deployment.rows("SELECT provider_id FROM deliveries WHERE key = :key", key=row.key)[0][0] == AUDIENCE_OP


def test_unsubscribing_by_the_emails_link_stops_marketing_not_receipts(deployment: Deployment, sdk: Sdk, person):
    # Given a customer who got a marketing email, with its one-click unsubscribe link
    fay = person("Fay")
    sdk.track(fay.id, "checkout_started", {"cart_id": "cart-1"})
    sdk.flush()
    sent(deployment, fay.id, 1)
    [nudge] = emails_to(deployment, fay.email, 1)
    assert nudge["Subject"] == "Fay, cart cart-1 is waiting"
    assert nudge["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = nudge["List-Unsubscribe"].strip("<>")
    assert link.startswith(f"{PUBLIC_URL}/u/")

    # When she clicks it (a mail client's RFC 8058 one-click POST, through the TLS proxy)
    answer = httpx.post(deployment.url + link.removeprefix(PUBLIC_URL), content=b"List-Unsubscribe=One-Click",
                        headers={"content-type": "application/x-www-form-urlencoded"}, timeout=30)
    assert answer.status_code == 200, answer.text

    # and starts another checkout, then orders
    sdk.track(fay.id, "checkout_started", {"cart_id": "cart-2"})
    sdk.flush()
    deployment.settled(fay.id, 2)
    sdk.track(fay.id, "order_completed", {"order_id": "o-4004"})
    sdk.flush()

    # Then the second nudge is held, and the receipt arrives
    rows = deployment.settled(fay.id, 3)
    assert [(r.step, r.status, r.error) for r in rows] == [
        ("nudge", "sent", None),
        ("nudge", "held", "unsubscribed from email topic deals"),
        ("receipt", "sent", None),
    ]
    emails = emails_to(deployment, fay.email, 2)
    assert [m["Subject"] for m in emails] == ["Fay, cart cart-1 is waiting", "Your order o-4004"]

    # And `journey trace` tells why the nudge was not sent
    trace = deployment.journey("trace", fay.id)
    assert trace.returncode == 0, trace.stderr
    assert "held: unsubscribed from email topic deals" in trace.stdout, trace.stdout


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
