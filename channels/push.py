"""Push notifications through an FCM HTTP v1-compatible API.

``POST {PUSH_API_URL}/v1/projects/{PUSH_PROJECT_ID}/messages:send`` with
``Authorization: Bearer {PUSH_ACCESS_TOKEN}`` and ``{"message": {"token", "notification":
{"title", "body"}, "data"}}``. The answer's ``name`` (``projects/p/messages/0:123``) is
the provider id. FCM has no idempotency key; the key travels in ``data`` as
``idempotency_key`` so the app can drop a duplicate. An ``UNREGISTERED`` error (the app
was uninstalled) is permanent, a bounce, and flagged ``unregistered`` in the result's
detail, so the engine suppresses the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from channels import http
from channels.base import Channel, Message, Result
from channels.settings import ChannelSettings


class PushChannel(Channel):
    """Sends ``content["text"]`` (and ``title``) to ``recipient.push_token``."""

    name = "push"
    requires = ("push_token",)
    requires_content = ("text",)
    parts = ("title", "text")

    def __init__(self, api_url: str, project_id: str, access_token: str, *, timeout: float = 10.0) -> None:
        self._url = f"{api_url.rstrip('/')}/v1/projects/{quote(project_id, safe='')}/messages:send"
        self._client = http.make_client(timeout, headers={"authorization": f"Bearer {access_token}"})

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> PushChannel:
        """Build it from ``PUSH_API_URL``, ``PUSH_PROJECT_ID`` and ``PUSH_ACCESS_TOKEN``."""
        settings.require("push", push_project_id="PUSH_PROJECT_ID", push_access_token="PUSH_ACCESS_TOKEN")
        return cls(settings.push_api_url, settings.push_project_id or "", settings.push_access_token or "",
                   timeout=settings.timeout.total_seconds())

    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON document FCM expects."""
        notification = {"body": str(message.content["text"])}
        if message.content.get("title"):
            notification["title"] = str(message.content["title"])
        # FCM data values must be strings.
        data = {"idempotency_key": message.idempotency_key}
        for key in ("journey_id", "step_id"):
            if message.metadata.get(key) is not None:
                data[key] = str(message.metadata[key])
        return {"message": {"token": str(message.recipient.push_token), "notification": notification, "data": data}}

    def deliver(self, message: Message) -> Result:
        request = self._client.build_request("POST", self._url, json=self.payload(message))
        response = http.send(self._client, request, "the push API")
        answer = http.json_body(response)
        if response.is_success:
            name = answer.get("name")
            return Result.sent(str(name) if name else None, http_status=response.status_code)
        found = answer.get("error")
        error: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        code = _fcm_error_code(error)
        detail: dict[str, Any] = {"provider_code": code} if code else {}
        if code == "UNREGISTERED":
            detail["unregistered"] = True
        text = error.get("message")
        return http.failure(response, "the push API", f"{code}: {text}" if code and text else text,
                            bounce=code == "UNREGISTERED", **detail)

    def close(self) -> None:
        self._client.close()
        super().close()


def _fcm_error_code(error: Mapping[str, Any]) -> str | None:
    """FCM's own error code (``UNREGISTERED``...) from the details, else the status."""
    for item in error.get("details") or ():
        if isinstance(item, Mapping) and item.get("errorCode"):
            return str(item["errorCode"])
    status = error.get("status")
    return str(status) if status else None
