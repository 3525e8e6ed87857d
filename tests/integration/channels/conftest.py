"""Every adapter, wired to a real peer on loopback, behind one harness for the contract tests.

Like dramatiq's ``result_backend`` fixture: the ``harness`` fixture is parametrized over
every adapter (and the stub twin), so one suite of contract tests runs against each.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from channels import Channel, Message, Recipient, StubChannel
from channels.email import EmailChannel
from channels.log import LogChannel
from channels.push import PushChannel
from channels.retargeting import RetargetingChannel
from channels.settings import SmtpServer
from channels.sms import SmsChannel
from channels.ssrf import AddressGuard
from channels.webhook import WebhookChannel
from tests.integration.channels.peers import HttpPeer, Reply, SmtpPeer, http_peer, smtp_peer

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
#: Only the test peers' address: loopback is otherwise refused like any private address.
LOOPBACK_ONLY = AddressGuard(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))

CUSTOMER = Recipient(
    customer_id="cus_1",
    email="ada@example.com",
    phone="+14155550123",
    push_token="device-token-1",
    traits={"first_name": "Ada"},
)


@pytest.fixture
def peer() -> Iterator[HttpPeer]:
    """A recording HTTP server on 127.0.0.1."""
    yield from http_peer()


@pytest.fixture
def smtp() -> Iterator[SmtpPeer]:
    """An aiosmtpd server on 127.0.0.1."""
    yield from smtp_peer()


@dataclass
class Harness:
    """One adapter and the peer behind it, seen the same way by the contract tests.

    Attributes:
        message: a good message with the given idempotency key.
        missing: the recipient field whose absence the adapter must refuse.
        fail_temporarily / fail_permanently: make the peer's next answer a temporary
            (5xx, SMTP 4xx) or permanent (4xx, SMTP 5xx) refusal; None without a peer.
        received: how many messages the peer received.
        keys_seen: every place the peer saw, as text, where an idempotency key could be.
    """

    channel: Channel
    message: Callable[[str], Message]
    missing: str
    received: Callable[[], int]
    keys_seen: Callable[[], str]
    fail_temporarily: Callable[[], None] | None = None
    fail_permanently: Callable[[], None] | None = None


def _message(channel: str, **content: object) -> Callable[[str], Message]:
    def make(key: str) -> Message:
        return Message(channel=channel, idempotency_key=key, recipient=CUSTOMER, content=content,
                       metadata={"journey_id": "welcome", "step_id": "hello"})
    return make


def _http_failures(peer: HttpPeer) -> dict[str, Callable[[], None]]:
    return {
        "fail_temporarily": lambda: peer.reply(Reply(503, {"message": "down for maintenance"})),
        "fail_permanently": lambda: peer.reply(Reply(400, {"message": "bad request"})),
    }


def _http_seen(peer: HttpPeer) -> Callable[[], str]:
    return lambda: " ".join(f"{r.headers} {r.body.decode()}" for r in peer.requests)


ADAPTERS = ["stub", "log", "email", "sms", "webhook", "push", "retargeting"]


@pytest.fixture(params=ADAPTERS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Each adapter with its peer; closed after the test."""
    build = globals()[f"_{request.param}_harness"]
    made: Harness = build(request)
    try:
        yield made
    finally:
        made.channel.close()


def _stub_harness(request: pytest.FixtureRequest) -> Harness:
    stub = StubChannel("email", requires=("email",), requires_content=("text",))
    return Harness(
        channel=stub, message=_message("email", subject="Hi", text="Hello"), missing="email",
        received=lambda: len(stub.sent), keys_seen=lambda: " ".join(m.idempotency_key for m in stub.attempts),
        fail_temporarily=lambda: stub.fail("retryable"), fail_permanently=lambda: stub.fail("permanent"),
    )


def _log_harness(request: pytest.FixtureRequest) -> Harness:
    caplog: pytest.LogCaptureFixture = request.getfixturevalue("caplog")
    caplog.set_level(logging.INFO, logger="journey_engine.channels")
    records = lambda: [r for r in caplog.records if r.name == "journey_engine.channels"]  # noqa: E731
    return Harness(
        channel=LogChannel(), message=_message("log", text="Hello"), missing="text",
        received=lambda: len(records()), keys_seen=lambda: " ".join(r.getMessage() for r in records()),
    )


def _email_harness(request: pytest.FixtureRequest) -> Harness:
    server: SmtpPeer = request.getfixturevalue("smtp")
    channel = EmailChannel(SmtpServer(server.host, server.port), "Shop <news@shop.example>", timeout=5)
    box = server.mailbox
    return Harness(
        channel=channel, message=_message("email", subject="Hi", text="Hello", html="<p>Hello</p>"),
        missing="email", received=lambda: len(box.messages),
        keys_seen=lambda: " ".join(str(m["Message-ID"]) for m in box.messages),
        fail_temporarily=lambda: box.refuse("451 4.3.0 Try again later"),
        fail_permanently=lambda: box.refuse("554 5.7.1 Message rejected"),
    )


def _sms_harness(request: pytest.FixtureRequest) -> Harness:
    peer: HttpPeer = request.getfixturevalue("peer")
    peer.default = Reply(201, {"sid": "SM0123456789abcdef", "status": "queued"})
    channel = SmsChannel(peer.url, "AC123", "token", "+14155550100", timeout=5)
    return Harness(channel=channel, message=_message("sms", text="Hello"), missing="phone",
                   received=lambda: len(peer.requests), keys_seen=_http_seen(peer), **_http_failures(peer))


def _webhook_harness(request: pytest.FixtureRequest) -> Harness:
    peer: HttpPeer = request.getfixturevalue("peer")
    channel = WebhookChannel(SECRET, guard=LOOPBACK_ONLY, timeout=5)
    good = _message("webhook", url=f"{peer.url}/hooks", body='{"event": "hello"}')
    return Harness(channel=channel, message=good, missing="url", received=lambda: len(peer.requests),
                   keys_seen=_http_seen(peer), **_http_failures(peer))


def _push_harness(request: pytest.FixtureRequest) -> Harness:
    peer: HttpPeer = request.getfixturevalue("peer")
    peer.default = Reply(200, {"name": "projects/shop/messages/0:1500415314455276"})
    channel = PushChannel(peer.url, "shop", "access-token", timeout=5)
    return Harness(channel=channel, message=_message("push", title="Hi", text="Hello"), missing="push_token",
                   received=lambda: len(peer.requests), keys_seen=_http_seen(peer), **_http_failures(peer))


def _retargeting_harness(request: pytest.FixtureRequest) -> Harness:
    peer: HttpPeer = request.getfixturevalue("peer")
    peer.default = Reply(200, {"id": "op_1"})
    channel = RetargetingChannel(peer.url, "audience-token", timeout=5)
    return Harness(channel=channel, message=_message("retargeting", audience="cart_abandoners", action="add"),
                   missing="email and phone", received=lambda: len(peer.requests), keys_seen=_http_seen(peer),
                   **_http_failures(peer))


def without(message: Message, missing: str) -> Message:
    """``message`` without the field the harness names (a recipient field, or a content part)."""
    if missing == "email and phone":
        return replace(message, recipient=replace(message.recipient, email=None, phone=None))
    if hasattr(message.recipient, missing):
        return replace(message, recipient=replace(message.recipient, **{missing: None}))
    return replace(message, content={k: v for k, v in message.content.items() if k != missing})
