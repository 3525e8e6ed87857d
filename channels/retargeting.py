"""Retargeting audiences: add a customer to, or remove one from, a named ad audience.

``POST {AUDIENCE_API_URL}/audiences/{audience}/members`` with ``Authorization: Bearer
{AUDIENCE_API_TOKEN}``, ``Idempotency-Key`` and::

    {"action": "add", "members": [{"email_sha256": "...", "phone_sha256": "...",
                                   "external_id_sha256": "..."}]}

Ad platforms (Google Customer Match, Meta custom audiences, TikTok...) match on SHA-256
hashes of normalized identifiers and never want them in clear: emails are trimmed and
lowercased, phones written in E.164 (``+14155550123``), then hashed to lowercase hex. A
small bridge per platform translates this one shape. The answer's ``id`` (or its
``X-Request-Id``) is the provider id.

A conversion or an exit removes the customer again: the runtime emits one ``remove`` per
audience the enrollment added them to (docs/channels.md), and the policy lets every
removal through (:func:`is_removal`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from channels import http
from channels.base import Channel, Message, Recipient, Result
from channels.settings import ChannelSettings

ACTIONS = ("add", "remove")
_PHONE_NOISE = re.compile(r"[\s\-.()/]")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")


def normalize_email(email: str) -> str | None:
    """Trim and lowercase ``email``; None if it is not an address."""
    value = email.strip().lower()
    local, at, domain = value.rpartition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in value):
        return None
    return value


def normalize_phone(phone: str) -> str | None:
    """Write ``phone`` in E.164 (``+`` and 8 to 15 digits); None if it has no country code.

    Spaces, dashes, dots, slashes and parentheses are dropped and a leading ``00``
    becomes ``+``. A national number (``0612345678``) cannot be placed without knowing
    the country, so it gives None rather than a wrong guess.
    """
    value = _PHONE_NOISE.sub("", phone.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    return value if _E164.match(value) else None


def sha256_hex(value: str) -> str:
    """The lowercase hex SHA-256 of ``value`` in UTF-8."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hashed_identifiers(recipient: Recipient) -> dict[str, str]:
    """The recipient's identifiers an ad platform can match on, normalized and hashed."""
    identifiers = {}
    email = normalize_email(recipient.email) if recipient.email else None
    if email:
        identifiers["email_sha256"] = sha256_hex(email)
    phone = normalize_phone(recipient.phone) if recipient.phone else None
    if phone:
        identifiers["phone_sha256"] = sha256_hex(phone)
    if identifiers and recipient.customer_id and not recipient.anonymous:  # an anonymous id is no user id
        identifiers["external_id_sha256"] = sha256_hex(recipient.customer_id.strip())
    return identifiers


def is_removal(channel: str, content: Mapping[str, Any] | None) -> bool:
    """Whether a send takes a customer out of an audience: never marketing, never held back."""
    return channel == RetargetingChannel.name and (content or {}).get("action") == "remove"


class RetargetingChannel(Channel):
    """Adds ``recipient`` to, or removes it from, ``content["audience"]``."""

    name = "retargeting"
    requires_content = ("audience", "action")
    deduplicates = True  # the audience API drops a repeated Idempotency-Key (and an add is idempotent)

    def __init__(self, api_url: str, token: str, *, timeout: float = 10.0) -> None:
        self._base = api_url.rstrip("/")
        self._client = http.make_client(timeout, headers={"authorization": f"Bearer {token}"})

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> RetargetingChannel:
        """Build it from ``AUDIENCE_API_URL`` and ``AUDIENCE_API_TOKEN``."""
        settings.require("retargeting", audience_api_url="AUDIENCE_API_URL",
                         audience_api_token="AUDIENCE_API_TOKEN")
        return cls(settings.audience_api_url or "", settings.audience_api_token or "",
                   timeout=settings.timeout.total_seconds())

    def check(self, message: Message) -> str | None:
        problem = super().check(message)
        if problem is not None:
            return problem
        if message.content["action"] not in ACTIONS:
            return f"the retargeting action is {message.content['action']!r}; write add or remove"
        if not hashed_identifiers(message.recipient):
            return (f"{message.recipient} has no email address or E.164 phone "
                    f"number an ad platform could match")
        return None

    def deliver(self, message: Message) -> Result:
        audience = str(message.content["audience"])
        payload: dict[str, Any] = {"action": message.content["action"],
                                   "members": [hashed_identifiers(message.recipient)]}
        request = self._client.build_request(
            "POST", f"{self._base}/audiences/{quote(audience, safe='')}/members", json=payload,
            headers={"idempotency-key": message.idempotency_key},
        )
        response = http.send(self._client, request, "the audience API")
        if response.is_success:
            answer = http.json_body(response)
            provider_id = answer.get("id") or response.headers.get("x-request-id")
            return Result.sent(str(provider_id) if provider_id else None, http_status=response.status_code,
                               audience=audience, action=message.content["action"])
        answer = http.json_body(response)
        error = answer.get("error")
        text = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
        return http.failure(response, "the audience API", text, audience=audience)

    def close(self) -> None:
        self._client.close()
        super().close()
