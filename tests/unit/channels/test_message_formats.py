"""What goes on the wire, checked without a peer: webhook signatures, email headers, push payloads."""

from __future__ import annotations

import base64
import time
from email import message_from_bytes, policy

import pytest
import standardwebhooks

from channels import Message, Recipient
from channels.email import EmailChannel, message_id
from channels.push import PushChannel
from channels.settings import SmtpServer
from channels.webhook import sign

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_the_signature_verifies_with_the_standard_webhooks_library() -> None:
    body = b'{"type":"cart.abandoned","data":{"total":42}}'
    timestamp = int(time.time())
    headers = {"webhook-id": "enr-1:hook:1", "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(SECRET, "enr-1:hook:1", timestamp, body)}

    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == {"type": "cart.abandoned", "data": {"total": 42}}
    tampered = body.replace(b"42", b"43")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(tampered, headers)


@pytest.mark.parametrize(
    ("key", "left"),
    [
        ("enr-1_s2_1", "enr-1_s2_1"),
        ("enr-1:s2:1", "enr-1=3As2=3A1"),
        ("a=b", "a=3Db"),
        ("café", "caf=C3=A9"),
    ],
)
def test_message_ids_keep_the_key_readable_and_distinct(key: str, left: str) -> None:
    assert message_id(key, "shop.example") == f"<{left}@shop.example>"


def email_channel() -> EmailChannel:
    return EmailChannel(SmtpServer("127.0.0.1", 25), "Shop <news@shop.example>")


def test_an_email_with_text_and_html_is_multipart_alternative() -> None:
    channel = email_channel()
    built = channel.build(Message("email", "k:1", Recipient("c1", email="ada@example.com"),
                                  content={"subject": "Your\ncart", "text": "Hello", "html": "<p>Hello</p>"},
                                  metadata={"unsubscribe_url": "https://shop.example/u/abc"}))
    parsed = message_from_bytes(built.as_bytes(), policy=policy.default)

    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]  # type: ignore[attr-defined]
    assert parsed["Subject"] == "Your cart"
    assert parsed["Message-ID"] == "<k=3A1@shop.example>"
    assert parsed["List-Unsubscribe"] == "<https://shop.example/u/abc>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_one_click_needs_an_https_unsubscribe_url() -> None:
    built = email_channel().build(Message("email", "k", Recipient("c1", email="ada@example.com"),
                                          content={"subject": "Hi", "html": "<p>Hi</p>"},
                                          metadata={"unsubscribe_url": "http://shop.example/u/abc"}))

    assert built["List-Unsubscribe"] == "<http://shop.example/u/abc>"
    assert built["List-Unsubscribe-Post"] is None
    assert built.get_content_type() == "text/html"


@pytest.mark.parametrize("address", ["ada@example.com\r\nBcc: all@example.com", "ada", "a@b@example.com",
                                     "Ada <ada@example.com>", "ada@localhost"])
def test_an_address_that_is_not_one_plain_address_is_refused(address: str) -> None:
    result = email_channel().send(Message("email", "k", Recipient("c1", email=address),
                                          content={"subject": "Hi", "text": "Hi"}))

    assert result.status == "permanent"
    assert "is not an email address" in (result.error or "")


def test_push_payload_follows_fcm_v1() -> None:
    channel = PushChannel("http://127.0.0.1:1", "shop", "token")
    payload = channel.payload(Message("push", "k:1", Recipient("c1", push_token="tok"),
                                      content={"title": "Hi", "text": "Your cart"},
                                      metadata={"journey_id": "cart", "step_id": 3}))
    channel.close()

    assert payload == {"message": {"token": "tok", "notification": {"title": "Hi", "body": "Your cart"},
                                   "data": {"idempotency_key": "k:1", "journey_id": "cart", "step_id": "3"}}}
    assert all(isinstance(v, str) for v in payload["message"]["data"].values())
