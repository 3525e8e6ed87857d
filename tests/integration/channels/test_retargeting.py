"""The audience adapter against an HTTP server on loopback: only hashes leave the engine."""

from __future__ import annotations

import pytest

from channels import Message, Recipient
from channels.retargeting import RetargetingChannel, sha256_hex
from tests.integration.channels.peers import HttpPeer, Reply

pytestmark = pytest.mark.integration

ADA = Recipient("cus_1", email=" Ada@Example.com ", phone="+1 (415) 555-0123", traits={"first_name": "Ada"})


@pytest.fixture
def audiences(peer: HttpPeer):  # type: ignore[no-untyped-def]
    peer.default = Reply(200, {"id": "op_42"})
    channel = RetargetingChannel(f"{peer.url}/v1", "audience-token", timeout=5)
    yield channel
    channel.close()


def test_add_then_goal_removal_post_hashed_identifiers(audiences: RetargetingChannel, peer: HttpPeer) -> None:
    added = Message("retargeting", "enr-1:retarget:1", ADA, content={"audience": "cart abandoners", "action": "add"})
    removed = Message("retargeting", "enr-1:leave:cart abandoners", ADA,
                      content={"audience": "cart abandoners", "action": "remove"})

    results = [audiences.send(added), audiences.send(removed)]

    assert [(r.status, r.provider_id) for r in results] == [("sent", "op_42"), ("sent", "op_42")]
    member = {"email_sha256": sha256_hex("ada@example.com"), "phone_sha256": sha256_hex("+14155550123"),
              "external_id_sha256": sha256_hex("cus_1")}
    assert [(r.path, r.json()) for r in peer.requests] == [
        ("/v1/audiences/cart%20abandoners/members", {"action": "add", "members": [member]}),
        ("/v1/audiences/cart%20abandoners/members", {"action": "remove", "members": [member]}),
    ]
    assert [r.headers["idempotency-key"] for r in peer.requests] == ["enr-1:retarget:1", "enr-1:leave:cart abandoners"]
    assert peer.requests[0].headers["authorization"] == "Bearer audience-token"
    sent = b" ".join(r.body for r in peer.requests).lower()
    assert b"ada" not in sent and b"4155550123" not in sent


def test_an_unknown_action_is_permanent_and_not_sent(audiences: RetargetingChannel, peer: HttpPeer) -> None:
    result = audiences.send(Message("retargeting", "k", ADA, content={"audience": "vip", "action": "drop"}))

    assert result.status == "permanent"
    assert "write add or remove" in (result.error or "")
    assert peer.requests == []
