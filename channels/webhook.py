"""Webhooks: a JSON body POSTed to the step's URL, signed as Standard Webhooks defines.

Each request carries ``webhook-id`` (the message's idempotency key, the same on every
retry, so a receiver can drop duplicates), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` keyed with
the decoded ``whsec_`` secret). Receivers verify it with any Standard Webhooks library.

The URL comes from a journey file, so every hop, redirects included, goes through the
:class:`~channels.ssrf.AddressGuard` and connects to the address it checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from channels import http
from channels.base import Channel, Message, Result
from channels.settings import ChannelSettings
from channels.ssrf import AddressGuard, IPAddress, ip_literal
from engine.errors import ChannelError

REDIRECTS = (301, 302, 303, 307, 308)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for ``body``: ``v1,<base64 HMAC-SHA256>``."""
    encoded = secret.removeprefix("whsec_")
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookChannel(Channel):
    """POSTs ``content["body"]`` to ``content["url"]``, signed, through the SSRF guard.

    Redirects (301, 302, 303, 307, 308) are followed up to ``max_redirects`` times, each
    re-sending the same signed POST: a webhook is never turned into a GET. Every hop is
    checked again by the guard.
    """

    name = "webhook"
    requires_content = ("url", "body")
    parts = ("body",)  # the url comes from the step, not from a template
    deduplicates = True  # receivers drop a repeated webhook-id (Standard Webhooks)

    def __init__(
        self,
        secret: str,
        *,
        guard: AddressGuard | None = None,
        timeout: float = 10.0,
        max_redirects: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._guard = guard or AddressGuard()
        self._max_redirects = max_redirects
        self._clock = clock
        # trust_env=False: a proxy from the environment would connect on our behalf to
        # whatever the URL names, around the guard.
        self._client = httpx.Client(
            timeout=timeout, follow_redirects=False, trust_env=False, headers={"user-agent": http.USER_AGENT}
        )

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> WebhookChannel:
        """Build it from ``WEBHOOK_SECRET``, ``WEBHOOK_TIMEOUT`` and the ``WEBHOOK_ALLOW_*`` settings."""
        settings.require("webhook", webhook_secret="WEBHOOK_SECRET")
        guard = AddressGuard(settings.webhook_allow_private, settings.webhook_allow_networks)
        return cls(
            settings.webhook_secret or "",
            guard=guard,
            timeout=settings.webhook_timeout.total_seconds(),
            max_redirects=settings.webhook_max_redirects,
        )

    def deliver(self, message: Message) -> Result:
        body = _body(message.content["body"])
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.idempotency_key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, message.idempotency_key, timestamp, body),
        }
        try:
            url = httpx.URL(str(message.content["url"]))
        except (httpx.InvalidURL, TypeError) as exc:
            return Result.permanent(f"the webhook URL {message.content['url']!r} is invalid: {exc}")
        for hop in range(self._max_redirects + 1):
            response = self._post(url, headers, body)
            if response.status_code in REDIRECTS and "location" in response.headers:
                location = response.headers["location"]
                response.close()
                try:
                    url = url.join(location)
                except httpx.InvalidURL as exc:
                    return Result.permanent(f"{url.host} redirected to an invalid URL {location!r}: {exc}")
                continue
            text = http.read_some(response)
            if response.is_success:
                return Result.sent(message.idempotency_key, http_status=response.status_code, url=_shown(url),
                                   redirects=hop)
            return http.failure(response, f"the webhook at {url.host}", text, url=_shown(url))
        return Result.permanent(
            f"the webhook was redirected more than {self._max_redirects} times (last to {_shown(url)}); "
            f"point the step's url at the final address"
        )

    def _post(self, url: httpx.URL, headers: dict[str, str], body: bytes) -> httpx.Response:
        if url.scheme not in ("http", "https"):
            raise ChannelError(f"cannot send a webhook to {_shown(url)}: only http and https URLs are allowed",
                               retryable=False)
        if not url.host:
            raise ChannelError(f"the webhook URL {_shown(url)} names no host", retryable=False)
        port = url.port or (443 if url.scheme == "https" else 80)
        address = self._guard.check(url.host, port)
        request = self._client.build_request(
            "POST",
            _pinned(url, address),
            headers={**headers, "host": url.netloc.decode("ascii")},
            content=body,
            # TLS must still name and verify the host, not the address we connect to.
            extensions={} if ip_literal(url.host) else {"sni_hostname": url.host},
        )
        return http.send(self._client, request, f"the webhook at {url.host}", stream=True)

    def close(self) -> None:
        self._client.close()
        super().close()


def _shown(url: httpx.URL) -> str:
    """``url`` without its password, for errors and delivery records."""
    return str(url.copy_with(password=None)) if url.password else str(url)


def _pinned(url: httpx.URL, address: IPAddress) -> httpx.URL:
    """``url`` with its host replaced by the checked address, so no second lookup happens."""
    return url.copy_with(host=str(address))


def _body(body: Any) -> bytes:
    """The body as JSON bytes: rendered JSON text is sent as written, anything else dumped."""
    if isinstance(body, bytes | str):
        text = body.decode() if isinstance(body, bytes) else body
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ChannelError(f"the webhook body is not valid JSON: {exc}; render it with | tojson",
                               retryable=False) from None
        return text.encode()
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise ChannelError(f"the webhook body cannot be written as JSON: {exc}", retryable=False) from None
