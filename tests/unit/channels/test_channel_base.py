"""The base contract, the stub twin, the log channel and the registry of installed channels."""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib.metadata import EntryPoint

import pytest

import channels
from channels import Channel, ChannelSettings, Message, Recipient, Result, StubChannel, registry
from channels.log import LogChannel
from engine.errors import ChannelError, ConfigError

ADA = Recipient("cus_1", email="ada@example.com")


def message(key: str = "enr-1:s1:1", **content: object) -> Message:
    return Message("email", key, ADA, content=content or {"subject": "Hi", "text": "Hello"})


def test_raise_for_status_keeps_retryable() -> None:
    assert Result.sent("id-1").raise_for_status().provider_id == "id-1"
    with pytest.raises(ChannelError) as caught:
        Result.retryable("busy", retry_after=timedelta(seconds=30)).raise_for_status()
    assert caught.value.retryable is True and str(caught.value) == "busy"
    with pytest.raises(ChannelError) as caught:
        Result.permanent("no such user").raise_for_status()
    assert caught.value.retryable is False


def test_a_channel_error_raised_while_delivering_becomes_a_result() -> None:
    class Flaky(Channel):
        name = "flaky"

        def deliver(self, message: Message) -> Result:
            raise ChannelError("provider hung up", retryable=True)

    result = Flaky().send(message())

    assert (result.status, result.error) == ("retryable", "provider hung up")


def test_a_missing_content_part_names_the_alternatives() -> None:
    stub = StubChannel("email", requires_content=("subject", ("text", "html")))

    result = stub.send(message(subject="Hi"))

    assert result.status == "permanent"
    assert result.error == "the email message has no 'text' or 'html'; the step's template must render it"
    assert stub.attempts == []


def test_the_stub_records_sends_and_fails_when_told() -> None:
    stub = StubChannel("sms", requires=("phone",))
    texting = Message("sms", "k1", Recipient("c1", phone="+14155550123"), content={"text": "hi"})
    stub.fail("retryable", "carrier down", times=2)

    outcomes = [stub.send(texting).status for _ in range(3)]

    assert outcomes == ["retryable", "retryable", "sent"]
    assert len(stub.attempts) == 3 and len(stub.sent) == 1
    assert stub.sent_to("c1") == [texting]
    assert stub.send(Message("sms", "k2", Recipient("c2"), content={"text": "hi"})).error == (
        "customer 'c2' has no phone; a sms message needs one")


def test_the_stub_can_fail_until_reset() -> None:
    stub = StubChannel()
    stub.fail("permanent", times=None)

    assert [stub.send(message()).status for _ in range(3)] == ["permanent"] * 3
    stub.reset()
    assert stub.send(message()).provider_id == "stub-1"


def test_the_stub_can_bounce() -> None:
    stub = StubChannel()
    stub.fail("permanent", "550 5.1.1 no such user", bounce=True)

    bounced, sent = stub.send(message()), stub.send(message())

    assert (bounced.status, bounced.bounce, bounced.error) == ("permanent", True, "550 5.1.1 no such user")
    assert (sent.status, sent.bounce) == ("sent", False)
    with pytest.raises(ValueError, match="only a permanent failure can be a bounce"):
        stub.fail("retryable", bounce=True)


def test_the_log_channel_logs_the_message_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="journey_engine.channels")

    result = LogChannel().send(Message("log", "enr-9:hi:1", ADA, content={"text": "Hello\n  Ada"}))

    assert result.provider_id == "log:enr-9:hi:1"
    assert caplog.messages == ["log message enr-9:hi:1 to customer cus_1: Hello Ada"]


def test_the_six_channels_are_installed_through_entry_points() -> None:
    assert {"email", "sms", "webhook", "push", "retargeting", "log"} <= set(channels.available())


def test_load_builds_an_adapter_from_settings() -> None:
    with channels.load("log", ChannelSettings()) as log:
        assert isinstance(log, LogChannel)


def test_an_unknown_channel_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown channel 'emial'. Did you mean 'email'\? \(installed: email, "):
        channels.load("emial", ChannelSettings())


def test_a_channel_missing_its_settings_names_the_variables() -> None:
    with pytest.raises(ConfigError, match="the email channel needs SMTP_URL and EMAIL_FROM"):
        channels.load("email", ChannelSettings())


def test_load_all_reports_every_channel_that_cannot_be_built() -> None:
    with pytest.raises(ConfigError) as caught:
        channels.load_all(["email", "log", "push"], ChannelSettings())

    assert str(caught.value).splitlines() == [
        "the email channel needs SMTP_URL and EMAIL_FROM; set them in the environment (see docs/channels.md), "
        "or do not use email in journeys",
        "the push channel needs PUSH_PROJECT_ID and PUSH_ACCESS_TOKEN; set them in the environment "
        "(see docs/channels.md), or do not use push in journeys",
    ]


def test_a_broken_plugin_is_named_and_does_not_hide_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry._entry_points()
    broken = {
        "fax": EntryPoint("fax", "journey_fax_plugin_missing:FaxChannel", registry.GROUP),
        "pager": EntryPoint("pager", "channels.base:Result", registry.GROUP),
    }
    monkeypatch.setattr(registry, "_entry_points", lambda: {**real, **broken})

    assert "fax" in channels.available()
    with pytest.raises(ConfigError, match=r"the channel 'fax' \(journey_fax_plugin_missing:FaxChannel\) "
                                          r"cannot be loaded: ModuleNotFoundError"):
        channels.load("fax", ChannelSettings())
    with pytest.raises(ConfigError, match="is not a channels.base.Channel subclass"):
        channels.load("pager", ChannelSettings())
    assert isinstance(channels.load("log", ChannelSettings()), LogChannel)
    assert "fax" not in channels.catalog() and "log" in channels.catalog()


def test_all_is_exactly_the_public_names() -> None:
    public = {name for name, value in vars(channels).items()
              if not name.startswith("_") and getattr(value, "__module__", "").startswith("channels")}
    assert public == set(channels.__all__)


def test_the_registry_catalog_agrees_with_the_journey_loaders_list() -> None:
    from engine.definitions import catalog as loader_catalog

    infos = channels.catalog()

    assert {name: infos[name].required for name in loader_catalog.CHANNELS} == loader_catalog.CHANNELS
    assert {name: infos[name].parts for name in loader_catalog.CHANNEL_PARTS} == loader_catalog.CHANNEL_PARTS
