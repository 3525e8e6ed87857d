"""One way to build a process: Services.from_env reads the engine's and the channels' settings."""

from __future__ import annotations

import logging

import pytest

from channels.email import EmailChannel
from channels.log import PreviewChannel
from engine import ConfigError
from engine.delivery import Deliverer
from engine.policy import PolicyLayer
from engine.services import Services
from engine.storage.db import upgrade
from tests.conftest import close_services
from tests.unit.test_policy import NOON, add_deliveries, make_world


def test_from_env_reads_the_channel_settings(sqlite_url):
    services = Services.from_env({"DATABASE_URL": sqlite_url, "SMTP_URL": "smtp://127.0.0.1:2525",
                                  "EMAIL_FROM": "Shop <news@shop.example>"})
    try:
        assert isinstance(services.adapter("email"), EmailChannel)
    finally:
        close_services(services)


def test_from_env_names_every_malformed_variable_of_engine_and_channels_at_once(sqlite_url):
    with pytest.raises(ConfigError) as caught:
        Services.from_env({"DATABASE_URL": sqlite_url, "JOURNEY_SWEEP_AFTER": "soon", "SMTP_URL": "http://x"})
    lines = str(caught.value).splitlines()
    assert [line.split("=")[0] for line in lines] == ["JOURNEY_SWEEP_AFTER", "SMTP_URL"]


def test_a_process_logs_which_channels_it_sends_through(sqlite_url, caplog):
    caplog.set_level(logging.INFO, logger="engine.services")
    services = Services.from_env({"DATABASE_URL": sqlite_url, "SMTP_URL": "smtp://127.0.0.1:2525",
                                  "EMAIL_FROM": "news@shop.example"}, process="journey worker")
    close_services(services)
    lines = [record.getMessage() for record in caplog.records]
    assert "journey worker: channels configured: email, log" in lines
    assert any(line.startswith("journey worker: channel sms is not configured (the sms channel needs SMS_ACCOUNT_SID")
               and line.endswith("its sends fail at once") for line in lines)


def test_a_send_through_an_unconfigured_channel_fails_at_once_with_the_reason(sqlite_url):
    services = Services.from_env({"DATABASE_URL": sqlite_url})
    upgrade(services.engine)
    try:
        services, customer_id, _ = make_world(services, "UTC")
        del services.adapters["email"]  # make_world installs a stub: use the real, unconfigured one
        [delivery] = add_deliveries(services, customer_id)
        policy = PolicyLayer(services.settings, services.sessions, services.deployed)
        outcome = Deliverer(services.sessions, services.deployed, services.adapter, policy).deliver(delivery, NOON)
        assert (outcome.status, outcome.retry_in, outcome.error) == (
            "failed", None,
            "the email channel is not configured: the email channel needs SMTP_URL and EMAIL_FROM; set them in the "
            "environment (see docs/channels.md), or do not use email in journeys",
        )
    finally:
        close_services(services)


def test_journey_dev_previews_an_unconfigured_channel(sqlite_url):
    services = Services.from_env({"DATABASE_URL": sqlite_url}, preview_unconfigured=True)
    try:
        assert isinstance(services.adapter("sms"), PreviewChannel)
    finally:
        close_services(services)
