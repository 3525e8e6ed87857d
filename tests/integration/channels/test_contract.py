"""The contract every channel adapter keeps, run against each one and its real peer."""

from __future__ import annotations

import pytest

from tests.integration.channels.conftest import Harness, without

pytestmark = pytest.mark.integration


def test_a_good_message_is_sent_with_the_providers_id(harness: Harness) -> None:
    result = harness.channel.send(harness.message("enr-1:hello:1"))

    assert result.status == "sent", result.error
    assert result.provider_id
    assert result.error is None
    assert harness.received() == 1


def test_a_temporary_refusal_is_retryable(harness: Harness) -> None:
    if harness.fail_temporarily is None:
        pytest.skip(f"{harness.channel.name} has no peer that can refuse")
    harness.fail_temporarily()

    result = harness.channel.send(harness.message("enr-1:hello:1"))

    assert result.status == "retryable"
    assert result.error
    # The refusal was for that message only: the next one goes through.
    assert harness.channel.send(harness.message("enr-1:hello:1")).status == "sent"


def test_a_permanent_refusal_is_permanent(harness: Harness) -> None:
    if harness.fail_permanently is None:
        pytest.skip(f"{harness.channel.name} has no peer that can refuse")
    harness.fail_permanently()

    result = harness.channel.send(harness.message("enr-1:hello:1"))

    assert result.status == "permanent"
    assert result.error
    assert result.provider_id is None


def test_a_missing_field_is_a_permanent_failure_that_names_it(harness: Harness) -> None:
    message = without(harness.message("enr-1:hello:1"), harness.missing)

    result = harness.channel.send(message)

    assert result.status == "permanent"
    for word in harness.missing.replace("_", " ").split(" and "):
        assert word in (result.error or ""), result.error
    assert harness.received() == 0


def test_the_idempotency_key_reaches_the_peer(harness: Harness) -> None:
    harness.channel.send(harness.message("enrollment-7f3a_step-2_visit-1"))

    assert "enrollment-7f3a_step-2_visit-1" in harness.keys_seen()


def test_close_twice_is_harmless_and_a_closed_channel_sends_nothing(harness: Harness) -> None:
    harness.channel.close()
    harness.channel.close()

    result = harness.channel.send(harness.message("enr-1:hello:1"))

    assert result.status == "permanent"
    assert "closed" in (result.error or "")
    assert harness.received() == 0
