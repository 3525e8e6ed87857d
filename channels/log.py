"""The ``log`` channel: writes each message to the ``journey_engine.channels`` logger.

For development and tests: nothing leaves the process, and every message is visible.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from channels.base import Channel, Message, Result
from channels.settings import ChannelSettings

logger = logging.getLogger("journey_engine.channels")

#: The provider id of a message :class:`PreviewChannel` logged in place of sending it.
PREVIEW_PREFIX = "preview:"


class LogChannel(Channel):
    """Logs the message at INFO, with its fields in the record's ``channel_message``."""

    name = "log"
    requires_content: ClassVar[tuple[str | tuple[str, ...], ...]] = ("text",)
    parts = ("text",)

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._log = log or logger

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> LogChannel:
        """It needs no settings."""
        return cls()

    def deliver(self, message: Message) -> Result:
        text = " ".join(str(message.content["text"]).split())
        self._log.info(
            "log message %s to customer %s: %s",
            message.idempotency_key, message.recipient.customer_id, text,
            extra={"channel_message": message},
        )
        return Result.sent(f"log:{message.idempotency_key}")


class PreviewChannel(LogChannel):
    """Stands in for a channel that has no settings, in ``journey dev``: logs any content.

    So a developer without SMTP or Twilio credentials still sees every message a
    journey would send, under its real channel name.
    """

    requires_content = ()

    def __init__(self, name: str, log: logging.Logger | None = None) -> None:
        super().__init__(log)
        self.preview_of = name

    def deliver(self, message: Message) -> Result:
        parts = "; ".join(f"{k}: {' '.join(str(v).split())[:200]}" for k, v in message.content.items())
        self._log.info(
            "%s (preview) message %s to customer %s: %s",
            self.preview_of, message.idempotency_key, message.recipient.customer_id, parts,
            extra={"channel_message": message},
        )
        return Result.sent(f"{PREVIEW_PREFIX}{message.idempotency_key}")
