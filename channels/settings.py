"""Channel settings: credentials and endpoints, read from the environment at start-up.

Credentials live here and only here: a journey file names a channel, never a password.
Every malformed value is reported at once, one line each, naming the variable; a value
that is missing is reported when an adapter that needs it is built, so an engine that
sends no SMS needs no SMS settings.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import parseaddr
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from engine.durations import DURATION_HELP, parse_duration
from engine.errors import ConfigError
from engine.environment import Variable, read_environment

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SmtpServer:
    """Where to hand email over, parsed from ``SMTP_URL``.

    Attributes:
        security: ``plain`` (no TLS), ``starttls`` (upgrade after connecting:
            ``smtp://...?starttls=true``) or ``tls`` (TLS from the start: ``smtps://``).
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: Literal["plain", "starttls", "tls"] = "plain"

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        """Parse ``smtp://user:pass@host:port?starttls=true`` or ``smtps://...``.

        Raises:
            ValueError: the URL is not one of those.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("the scheme must be smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("it names no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port is not a number from 1 to 65535") from None
        query = parse_qs(parts.query)
        starttls = query.pop("starttls", ["false"])[-1].lower()
        if query:
            raise ValueError(f"unknown option {sorted(query)[0]!r}; only starttls=true|false is known")
        if starttls not in ("true", "false"):
            raise ValueError("starttls must be true or false")
        if parts.scheme == "smtps":
            security: Literal["plain", "starttls", "tls"] = "tls"
        else:
            security = "starttls" if starttls == "true" else "plain"
        default_port = 465 if security == "tls" else 587 if security == "starttls" else 25
        return cls(
            host=parts.hostname,
            port=port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            security=security,
        )


@dataclass(frozen=True)
class ChannelSettings:
    """Everything the channel adapters need; build it with :meth:`from_env`.

    Attributes:
        timeout: how long an adapter waits for its provider (``CHANNEL_TIMEOUT``), the
            webhook aside.
        smtp: the SMTP server (``SMTP_URL``); email_from: the From header (``EMAIL_FROM``).
        sms_api_url, sms_account_sid, sms_auth_token, sms_from: a Twilio-compatible
            Messages API (``SMS_*``); ``sms_from`` is a number or a messaging service SID.
        webhook_secret: the Standard Webhooks signing secret, ``whsec_`` + base64
            (``WEBHOOK_SECRET``); webhook_timeout: per request (``WEBHOOK_TIMEOUT``).
        webhook_allow_private: let webhooks reach loopback, private and link-local
            addresses (``WEBHOOK_ALLOW_PRIVATE``, false by default).
        webhook_allow_networks: addresses webhooks may reach even though they are not
            public, e.g. ``10.1.0.0/16`` (``WEBHOOK_ALLOW_NETWORKS``, comma-separated).
        webhook_max_redirects: redirects followed per webhook (``WEBHOOK_MAX_REDIRECTS``).
        push_api_url, push_project_id, push_access_token: an FCM HTTP v1-compatible API
            (``PUSH_*``).
        audience_api_url, audience_api_token: the retargeting audiences API (``AUDIENCE_*``).
    """

    timeout: timedelta = timedelta(seconds=10)
    smtp: SmtpServer | None = None
    email_from: str | None = None
    sms_api_url: str = "https://api.twilio.com"
    sms_account_sid: str | None = None
    sms_auth_token: str | None = field(default=None, repr=False)
    sms_from: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout: timedelta = timedelta(seconds=10)
    webhook_allow_private: bool = False
    webhook_allow_networks: tuple[Network, ...] = ()
    webhook_max_redirects: int = 3
    push_api_url: str = "https://fcm.googleapis.com"
    push_project_id: str | None = None
    push_access_token: str | None = field(default=None, repr=False)
    audience_api_url: str | None = None
    audience_api_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ChannelSettings:
        """Read the settings from ``environ`` (default: ``os.environ``).

        Raises:
            ConfigError: one or more variables are malformed, each named on its own line.
        """
        values, problems = read_environment(os.environ if environ is None else environ, _VARIABLES)
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(**values)

    def replace(self, **changes: Any) -> ChannelSettings:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)

    def require(self, channel: str, **needed: str) -> None:
        """Raise one error naming every variable ``channel`` needs and lacks.

        Args:
            needed: attribute name -> environment variable, e.g. ``smtp="SMTP_URL"``.

        Raises:
            ConfigError: ``the email channel needs SMTP_URL and EMAIL_FROM; set them...``
        """
        missing = [variable for attr, variable in needed.items() if getattr(self, attr) in (None, "")]
        if missing:
            them = "it" if len(missing) == 1 else "them"
            names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
            raise ConfigError(
                f"the {channel} channel needs {names}; set {them} in the "
                f"environment (see docs/channels.md), or do not use {channel} in journeys"
            )


def _positive_duration(raw: str) -> timedelta:
    value = parse_duration(raw)
    if value <= timedelta():
        raise ValueError("it must be longer than 0s")
    return value


def _address(raw: str) -> str:
    _, address = parseaddr(raw)
    local, at, domain = address.rpartition("@")
    if not (local and at and "." in domain):
        raise ValueError("no email address in it")
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http:// or https:// URL with a host")
    return raw.rstrip("/")


def _webhook_secret(raw: str) -> str:
    if not raw.startswith("whsec_"):
        raise ValueError("it does not start with whsec_")
    encoded = raw[len("whsec_"):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key is {len(key)} bytes; Standard Webhooks asks for 24 to 64")
    return raw


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


def _networks(raw: str) -> tuple[Network, ...]:
    networks = []
    for item in raw.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{item.strip()!r} is not an address or network") from None
    return tuple(networks)


def _redirects(raw: str) -> int:
    if not raw.isdigit() or int(raw) > 10:
        raise ValueError("not a whole number from 0 to 10")
    return int(raw)


_URL = "an http:// or https:// base URL"

#: Every variable: its name, the attribute it sets, how it is read, and what it expects.
_VARIABLES: tuple[Variable, ...] = (
    ("CHANNEL_TIMEOUT", "timeout", _positive_duration, DURATION_HELP),
    ("SMTP_URL", "smtp", SmtpServer.parse,
     "a URL such as smtp://user:password@mail.example.com:587?starttls=true or smtps://host:465"),
    ("EMAIL_FROM", "email_from", _address, "an address such as 'Shop <news@example.com>'"),
    ("SMS_API_URL", "sms_api_url", _http_url, _URL),
    ("SMS_ACCOUNT_SID", "sms_account_sid", str, "the account SID"),
    ("SMS_AUTH_TOKEN", "sms_auth_token", str, "the auth token"),
    ("SMS_FROM", "sms_from", str, "a sender number such as +14155550100, or a messaging service SID"),
    ("WEBHOOK_SECRET", "webhook_secret", _webhook_secret,
     "whsec_ followed by 24 to 64 random bytes in base64"),
    ("WEBHOOK_TIMEOUT", "webhook_timeout", _positive_duration, DURATION_HELP),
    ("WEBHOOK_ALLOW_PRIVATE", "webhook_allow_private", _boolean, "true or false"),
    ("WEBHOOK_ALLOW_NETWORKS", "webhook_allow_networks", _networks,
     "comma-separated addresses or networks such as 10.1.0.0/16,fd12::/64"),
    ("WEBHOOK_MAX_REDIRECTS", "webhook_max_redirects", _redirects, "a whole number from 0 to 10"),
    ("PUSH_API_URL", "push_api_url", _http_url, _URL),
    ("PUSH_PROJECT_ID", "push_project_id", str, "the Firebase project id"),
    ("PUSH_ACCESS_TOKEN", "push_access_token", str, "an OAuth 2.0 access token"),
    ("AUDIENCE_API_URL", "audience_api_url", _http_url, _URL),
    ("AUDIENCE_API_TOKEN", "audience_api_token", str, "the API's bearer token"),
)
