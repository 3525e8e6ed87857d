"""SMS through a Twilio-compatible Messages API.

``POST {SMS_API_URL}/2010-04-01/Accounts/{SMS_ACCOUNT_SID}/Messages.json`` with the form
fields ``To``, ``From`` (or ``MessagingServiceSid`` when ``SMS_FROM`` is a messaging
service SID, ``MG...``) and ``Body``, HTTP Basic auth with the account SID and auth
token. The answer's ``sid`` is the provider id; an error answer's ``code`` and
``message`` go into the result. The idempotency key is sent as ``Idempotency-Key`` for
compatible APIs that deduplicate on it (Twilio itself ignores the header).

An error code in :data:`INVALID_NUMBER_CODES` (the number cannot receive SMS) makes the
result a bounce, so the engine suppresses the number.
"""

from __future__ import annotations

from urllib.parse import quote

from channels import http
from channels.base import Channel, Message, Result
from channels.settings import ChannelSettings

#: Twilio error codes that say the 'To' number cannot receive SMS: 21211 invalid 'To'
#: phone number, 21614 'To' number is not a valid mobile number.
INVALID_NUMBER_CODES = frozenset({"21211", "21614"})


class SmsChannel(Channel):
    """Sends ``content["text"]`` to ``recipient.phone``."""

    name = "sms"
    requires = ("phone",)
    requires_content = ("text",)
    parts = ("text",)

    def __init__(self, api_url: str, account_sid: str, auth_token: str, sender: str, *,
                 timeout: float = 10.0) -> None:
        self._url = f"{api_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
        self._sender_field = "MessagingServiceSid" if sender.startswith("MG") else "From"
        self._sender = sender
        self._client = http.make_client(timeout, auth=(account_sid, auth_token))

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> SmsChannel:
        """Build it from ``SMS_API_URL``, ``SMS_ACCOUNT_SID``, ``SMS_AUTH_TOKEN`` and ``SMS_FROM``."""
        settings.require("sms", sms_account_sid="SMS_ACCOUNT_SID", sms_auth_token="SMS_AUTH_TOKEN",
                         sms_from="SMS_FROM")
        return cls(settings.sms_api_url, settings.sms_account_sid or "", settings.sms_auth_token or "",
                   settings.sms_from or "", timeout=settings.timeout.total_seconds())

    def deliver(self, message: Message) -> Result:
        form = {"To": str(message.recipient.phone), self._sender_field: self._sender,
                "Body": str(message.content["text"])}
        request = self._client.build_request(
            "POST", self._url, data=form, headers={"idempotency-key": message.idempotency_key}
        )
        response = http.send(self._client, request, "the SMS API")
        answer = http.json_body(response)
        if response.is_success:
            # Accepted is accepted: without a sid the message still went out, and a retry
            # would send it twice.
            sid = answer.get("sid")
            return Result.sent(str(sid) if sid else None, http_status=response.status_code,
                               provider_status=answer.get("status"))
        detail = {"provider_code": answer["code"]} if "code" in answer else {}
        bounce = str(answer.get("code")) in INVALID_NUMBER_CODES
        return http.failure(response, "the SMS API", answer.get("message"), bounce=bounce, **detail)

    def close(self) -> None:
        self._client.close()
        super().close()

