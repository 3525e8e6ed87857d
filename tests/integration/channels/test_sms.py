"""The SMS adapter against a Twilio-compatible HTTP server on loopback."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import pytest

from channels import Message, Recipient
from channels.sms import SmsChannel
from tests.integration.channels.peers import HttpPeer, Reply

pytestmark = pytest.mark.integration


def text(key: str = "enr-1:sms:1") -> Message:
    return Message("sms", key, Recipient("cus_1", phone="+14155550123"), content={"text": "Your cart misses you"})


def test_the_message_is_posted_as_twilio_expects(peer: HttpPeer) -> None:
    peer.default = Reply(201, {"sid": "SMa1b2c3", "status": "queued"})
    channel = SmsChannel(peer.url, "AC0001", "auth-token", "+14155550100", timeout=5)

    result = channel.send(text())
    channel.close()

    assert (result.status, result.provider_id) == ("sent", "SMa1b2c3")
    [request] = peer.requests
    assert request.path == "/2010-04-01/Accounts/AC0001/Messages.json"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"AC0001:auth-token").decode()
    assert request.headers["idempotency-key"] == "enr-1:sms:1"
    assert parse_qs(request.body.decode()) == {
        "To": ["+14155550123"], "From": ["+14155550100"], "Body": ["Your cart misses you"]}


def test_a_messaging_service_sid_is_sent_as_such(peer: HttpPeer) -> None:
    peer.default = Reply(201, {"sid": "SM1"})
    channel = SmsChannel(peer.url, "AC0001", "auth-token", "MG0123", timeout=5)

    channel.send(text())
    channel.close()

    form = parse_qs(peer.requests[0].body.decode())
    assert form["MessagingServiceSid"] == ["MG0123"] and "From" not in form


def test_twilio_error_codes_reach_the_result(peer: HttpPeer) -> None:
    peer.reply(Reply(400, {"code": 21211, "message": "The 'To' number +1415 is not a valid phone number.",
                           "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}))
    channel = SmsChannel(peer.url, "AC0001", "auth-token", "+14155550100", timeout=5)

    result = channel.send(text())
    channel.close()

    assert result.status == "permanent"
    assert result.detail["provider_code"] == 21211
    assert "not a valid phone number" in (result.error or "")
    assert result.bounce  # the number is bad: the engine suppresses it


@pytest.mark.parametrize("code, bounce", [(21614, True), ("21211", True), (21606, False), (20003, False)])
def test_only_invalid_number_codes_are_bounces(peer: HttpPeer, code: object, bounce: bool) -> None:
    # 21606: the From number cannot send (our configuration); 20003: wrong credentials.
    peer.reply(Reply(400, {"code": code, "message": "refused", "status": 400}))
    channel = SmsChannel(peer.url, "AC0001", "auth-token", "+14155550100", timeout=5)

    result = channel.send(text())
    channel.close()

    assert (result.status, result.bounce) == ("permanent", bounce)


def test_an_invalid_number_code_on_a_5xx_is_a_retry_not_a_bounce(peer: HttpPeer) -> None:
    peer.reply(Reply(503, {"code": 21211, "message": "try later"}))
    channel = SmsChannel(peer.url, "AC0001", "auth-token", "+14155550100", timeout=5)

    result = channel.send(text())
    channel.close()

    assert (result.status, result.bounce) == ("retryable", False)
