"""The webhook adapter against real HTTP servers on loopback: signatures, redirects, the guard."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
import standardwebhooks

from channels import Message, Recipient
from channels.ssrf import AddressGuard
from channels.webhook import WebhookChannel
from tests.integration.channels.conftest import LOOPBACK_ONLY, SECRET
from tests.integration.channels.peers import HttpPeer, Reply, http_peer

pytestmark = pytest.mark.integration


def hook(url: str, body: object = '{"type": "cart.abandoned", "data": {"total": 42}}', key: str = "enr-1:hook:1"
         ) -> Message:
    return Message("webhook", key, Recipient("cus_1"), content={"url": url, "body": body})


@pytest.fixture
def webhook() -> Iterator[WebhookChannel]:
    channel = WebhookChannel(SECRET, guard=LOOPBACK_ONLY, timeout=5)
    yield channel
    channel.close()


@pytest.fixture
def other_loopback() -> Iterator[HttpPeer]:
    """A second server, on 127.0.0.2: loopback, but not in the allowed network."""
    yield from http_peer("127.0.0.2")


def test_the_receiver_verifies_the_signature_with_standard_webhooks(webhook: WebhookChannel, peer: HttpPeer) -> None:
    result = webhook.send(hook(f"{peer.url}/hooks/cart?src=journey"))

    assert result.status == "sent"
    [request] = peer.requests
    assert (request.method, request.path) == ("POST", "/hooks/cart?src=journey")
    assert request.headers["webhook-id"] == "enr-1:hook:1"
    assert request.headers["content-type"] == "application/json"
    payload = standardwebhooks.Webhook(SECRET).verify(request.body, request.headers)
    assert payload == {"type": "cart.abandoned", "data": {"total": 42}}


def test_a_retry_has_the_same_webhook_id_and_a_valid_signature(webhook: WebhookChannel, peer: HttpPeer) -> None:
    peer.reply(Reply(500))
    first = webhook.send(hook(peer.url))
    second = webhook.send(hook(peer.url))

    assert (first.status, second.status) == ("retryable", "sent")
    assert [r.headers["webhook-id"] for r in peer.requests] == ["enr-1:hook:1", "enr-1:hook:1"]
    for request in peer.requests:
        standardwebhooks.Webhook(SECRET).verify(request.body, request.headers)


def test_a_mapping_body_is_sent_as_json(webhook: WebhookChannel, peer: HttpPeer) -> None:
    webhook.send(hook(peer.url, body={"type": "réduction", "n": [1, 2]}))

    assert peer.requests[0].json() == {"type": "réduction", "n": [1, 2]}


def test_a_body_that_is_not_json_is_permanent_and_not_sent(webhook: WebhookChannel, peer: HttpPeer) -> None:
    result = webhook.send(hook(peer.url, body='{"total": 42,}'))

    assert result.status == "permanent"
    assert "not valid JSON" in (result.error or "")
    assert peer.requests == []


def test_a_429_is_retryable_and_keeps_retry_after(webhook: WebhookChannel, peer: HttpPeer) -> None:
    peer.reply(Reply(429, {"error": "slow down"}, headers={"Retry-After": "120"}))

    result = webhook.send(hook(peer.url))

    assert result.status == "retryable"
    assert result.retry_after is not None and result.retry_after.total_seconds() == 120
    assert "429" in (result.error or "") and "slow down" in (result.error or "")


def test_a_410_gone_is_permanent(webhook: WebhookChannel, peer: HttpPeer) -> None:
    peer.reply(Reply(410))

    assert webhook.send(hook(peer.url)).status == "permanent"


def test_a_receiver_that_does_not_answer_in_time_is_retryable(peer: HttpPeer) -> None:
    peer.reply(Reply(200, stall=True))
    channel = WebhookChannel(SECRET, guard=LOOPBACK_ONLY, timeout=0.2)

    result = channel.send(hook(peer.url))
    channel.close()

    assert result.status == "retryable"
    assert "did not answer in time" in (result.error or "")


def test_a_closed_port_is_retryable(webhook: WebhookChannel, peer: HttpPeer) -> None:
    url = peer.url
    peer.stop()

    result = webhook.send(hook(url))

    assert result.status == "retryable"
    assert "cannot reach" in (result.error or "")


def test_redirects_are_followed_with_the_same_signed_post(webhook: WebhookChannel, peer: HttpPeer) -> None:
    peer.reply(Reply(307, headers={"Location": "/moved"}), Reply(302, headers={"Location": f"{peer.url}/final"}))

    result = webhook.send(hook(f"{peer.url}/start"))

    assert result.status == "sent"
    assert result.detail["redirects"] == 2
    assert [(r.method, r.path) for r in peer.requests] == [("POST", "/start"), ("POST", "/moved"), ("POST", "/final")]
    standardwebhooks.Webhook(SECRET).verify(peer.requests[-1].body, peer.requests[-1].headers)


def test_too_many_redirects_is_permanent(peer: HttpPeer) -> None:
    peer.default = Reply(302, headers={"Location": "/again"})
    channel = WebhookChannel(SECRET, guard=LOOPBACK_ONLY, max_redirects=2)

    result = channel.send(hook(peer.url))
    channel.close()

    assert result.status == "permanent"
    assert "redirected more than 2 times" in (result.error or "")
    assert len(peer.requests) == 3


@pytest.mark.parametrize(
    "location",
    ["{other}/steal", "http://2130706434:{port}/steal", "http://0x7f.0.0.2:{port}/steal",
     "http://[::ffff:127.0.0.2]:{port}/steal", "http://169.254.169.254/latest/meta-data/"],
)
def test_a_redirect_to_a_refused_address_is_not_followed(
    webhook: WebhookChannel, peer: HttpPeer, other_loopback: HttpPeer, location: str
) -> None:
    port = other_loopback.url.rsplit(":", 1)[1]
    peer.reply(Reply(302, headers={"Location": location.format(other=other_loopback.url, port=port)}))

    result = webhook.send(hook(peer.url))

    assert result.status == "permanent"
    assert "refused to send to" in (result.error or "")
    assert len(peer.requests) == 1
    assert other_loopback.requests == []


def test_loopback_is_refused_when_private_addresses_are_not_allowed(peer: HttpPeer) -> None:
    channel = WebhookChannel(SECRET, guard=AddressGuard())

    result = channel.send(hook(f"{peer.url}/hooks"))
    channel.close()

    assert result.status == "permanent"
    assert "it is a loopback address" in (result.error or "")
    assert peer.requests == []


def test_allow_private_lets_loopback_through(peer: HttpPeer) -> None:
    channel = WebhookChannel(SECRET, guard=AddressGuard(allow_private=True))

    assert channel.send(hook(peer.url)).status == "sent"
    channel.close()


def test_a_name_is_resolved_once_and_the_checked_address_is_used(peer: HttpPeer) -> None:
    # Given a resolver that answers the allowed address first and a refused one after
    # (DNS rebinding), the request goes to the address that was checked.
    answers = iter(["127.0.0.1", "10.0.0.1"])
    guard = AddressGuard(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
                         resolver=lambda host, port: [ipaddress.ip_address(next(answers))])
    channel = WebhookChannel(SECRET, guard=guard)
    port = peer.url.rsplit(":", 1)[1]

    result = channel.send(hook(f"http://hooks.shop.example:{port}/in"))
    channel.close()

    assert result.status == "sent"
    assert peer.requests[0].headers["host"] == f"hooks.shop.example:{port}"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "http:///nohost", "not a url"])
def test_urls_that_are_not_http_are_permanent(webhook: WebhookChannel, url: str) -> None:
    result = webhook.send(hook(url))

    assert result.status == "permanent", result.error


def test_an_endless_error_body_is_cut(webhook: WebhookChannel, peer: HttpPeer) -> None:
    peer.reply(Reply(400, b"x" * 200_000))

    result = webhook.send(hook(peer.url))

    assert result.status == "permanent"
    assert len(result.error or "") < 1000


def test_credentials_in_the_url_authenticate_but_are_not_recorded(webhook: WebhookChannel, peer: HttpPeer) -> None:
    url = peer.url.replace("http://", "http://hook-user:s3cret@") + "/in"
    peer.reply(Reply(401, {"error": "who are you"}))

    failed = webhook.send(hook(url))
    sent = webhook.send(hook(url))

    assert peer.requests[0].headers["authorization"] == "Basic aG9vay11c2VyOnMzY3JldA=="
    assert failed.status == "permanent" and sent.status == "sent"
    assert "s3cret" not in f"{failed.error} {failed.detail} {sent.detail}"
