"""Channel settings come from the environment; a bad value names its variable."""

from __future__ import annotations

import base64
import ipaddress
from datetime import timedelta

import pytest

from channels import ChannelSettings, SmtpServer
from engine.errors import ConfigError

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_nothing_set_gives_the_defaults() -> None:
    settings = ChannelSettings.from_env({})

    assert settings.smtp is None
    assert settings.webhook_allow_private is False
    assert settings.webhook_timeout == timedelta(seconds=10)


def test_every_variable_is_read() -> None:
    settings = ChannelSettings.from_env({
        "CHANNEL_TIMEOUT": "5s",
        "SMTP_URL": "smtp://mailer:p%40ss@mail.example.com:587?starttls=true",
        "EMAIL_FROM": "Shop <news@shop.example>",
        "SMS_API_URL": "http://127.0.0.1:9000/",
        "SMS_ACCOUNT_SID": "AC1", "SMS_AUTH_TOKEN": "t", "SMS_FROM": "+14155550100",
        "WEBHOOK_SECRET": SECRET, "WEBHOOK_TIMEOUT": "3s", "WEBHOOK_ALLOW_PRIVATE": "yes",
        "WEBHOOK_ALLOW_NETWORKS": "10.1.0.0/16, 127.0.0.1", "WEBHOOK_MAX_REDIRECTS": "0",
        "PUSH_API_URL": "https://push.example", "PUSH_PROJECT_ID": "shop", "PUSH_ACCESS_TOKEN": "ya29",
        "AUDIENCE_API_URL": "https://ads.example/v1", "AUDIENCE_API_TOKEN": "tok",
    })

    assert settings.timeout == timedelta(seconds=5)
    assert settings.smtp == SmtpServer("mail.example.com", 587, "mailer", "p@ss", "starttls")
    assert settings.sms_api_url == "http://127.0.0.1:9000"
    assert settings.webhook_allow_private is True
    assert settings.webhook_allow_networks == (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("127.0.0.1/32"))
    assert settings.webhook_max_redirects == 0
    assert settings.audience_api_token == "tok"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpServer("mail.example.com", 25)),
        ("smtp://mail.example.com?starttls=true", SmtpServer("mail.example.com", 587, security="starttls")),
        ("smtps://u:p@mail.example.com", SmtpServer("mail.example.com", 465, "u", "p", "tls")),
        ("smtp://127.0.0.1:2525", SmtpServer("127.0.0.1", 2525)),
    ],
)
def test_smtp_urls(url: str, expected: SmtpServer) -> None:
    assert SmtpServer.parse(url) == expected


def test_every_bad_value_is_reported_at_once_naming_its_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        ChannelSettings.from_env({
            "SMTP_URL": "http://mail.example.com", "WEBHOOK_TIMEOUT": "10", "WEBHOOK_ALLOW_PRIVATE": "maybe",
            "WEBHOOK_ALLOW_NETWORKS": "10.0.0.0/8,intranet", "SMS_API_URL": "ftp://sms.example",
            "EMAIL_FROM": "news", "SMTP_URL_UNUSED": "x",
        })

    lines = str(caught.value).splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "SMTP_URL", "EMAIL_FROM", "SMS_API_URL", "WEBHOOK_TIMEOUT", "WEBHOOK_ALLOW_PRIVATE", "WEBHOOK_ALLOW_NETWORKS",
    ]
    assert "smtp:// or smtps://" in lines[0]
    assert "'intranet' is not an address or network" in lines[5]


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("c2VjcmV0", "does not start with whsec_"),
        ("whsec_not base64!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5 bytes"),
    ],
)
def test_a_bad_webhook_secret_is_refused_without_printing_it(secret: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ChannelSettings.from_env({"WEBHOOK_SECRET": secret})

    assert why in str(caught.value)
    assert "WEBHOOK_SECRET=<hidden>" in str(caught.value)
    assert secret not in str(caught.value)


def test_a_smtp_password_is_not_printed_in_errors_or_repr() -> None:
    with pytest.raises(ConfigError) as caught:
        ChannelSettings.from_env({"SMTP_URL": "smtp://u:hunter2@mail.example.com:99999"})
    settings = ChannelSettings.from_env({"SMTP_URL": "smtp://u:hunter2@mail.example.com", "SMS_AUTH_TOKEN": "tok-9"})

    assert "port" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(settings) and "tok-9" not in repr(settings)


def test_require_names_every_missing_variable() -> None:
    with pytest.raises(ConfigError, match="the sms channel needs SMS_ACCOUNT_SID and SMS_FROM; set them"):
        ChannelSettings(sms_auth_token="t").require(
            "sms", sms_account_sid="SMS_ACCOUNT_SID", sms_auth_token="SMS_AUTH_TOKEN", sms_from="SMS_FROM")
