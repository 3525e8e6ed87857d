"""The push adapter against an FCM HTTP v1-compatible server on loopback."""

from __future__ import annotations

import pytest

from channels import Message, Recipient
from channels.push import PushChannel
from tests.integration.channels.peers import HttpPeer, Reply

pytestmark = pytest.mark.integration


def notification() -> Message:
    return Message("push", "enr-1:push:1", Recipient("cus_1", push_token="fcm-token-1"),
                   content={"title": "Still thinking?", "text": "Your cart is waiting"},
                   metadata={"journey_id": "cart", "step_id": "nudge"})


@pytest.fixture
def push(peer: HttpPeer):  # type: ignore[no-untyped-def]
    channel = PushChannel(peer.url, "shop-prod", "ya29.token", timeout=5)
    yield channel
    channel.close()


def test_the_message_is_posted_as_fcm_v1_expects(push: PushChannel, peer: HttpPeer) -> None:
    peer.default = Reply(200, {"name": "projects/shop-prod/messages/0:1500415314455276%31bd1c96"})

    result = push.send(notification())

    assert (result.status, result.provider_id) == ("sent", "projects/shop-prod/messages/0:1500415314455276%31bd1c96")
    [request] = peer.requests
    assert request.path == "/v1/projects/shop-prod/messages:send"
    assert request.headers["authorization"] == "Bearer ya29.token"
    assert request.json() == {"message": {
        "token": "fcm-token-1",
        "notification": {"title": "Still thinking?", "body": "Your cart is waiting"},
        "data": {"idempotency_key": "enr-1:push:1", "journey_id": "cart", "step_id": "nudge"},
    }}


def test_an_unregistered_token_is_permanent_and_flagged(push: PushChannel, peer: HttpPeer) -> None:
    peer.reply(Reply(404, {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                                     "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                  "errorCode": "UNREGISTERED"}]}}))

    result = push.send(notification())

    assert result.status == "permanent"
    assert result.detail["unregistered"] is True
    assert result.bounce  # the engine suppresses the token
    assert result.error == "the push API answered 404 Not Found: UNREGISTERED: Requested entity was not found."


def test_quota_exceeded_is_retryable_after_the_time_asked(push: PushChannel, peer: HttpPeer) -> None:
    peer.reply(Reply(429, {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
                                     "details": [{"errorCode": "QUOTA_EXCEEDED"}]}}, headers={"Retry-After": "60"}))

    result = push.send(notification())

    assert result.status == "retryable"
    assert result.detail["provider_code"] == "QUOTA_EXCEEDED"
    assert not result.bounce
    assert result.retry_after is not None and result.retry_after.total_seconds() == 60
