"""The ``log`` channel: writes each message to the ``journey_engine.channels`` logger.

For development and tests: nothing leaves the process, and every message is visible.
"""

from __future__ import annotations

import logging

from channels.base import Channel, Message, Result
from channels.settings import ChannelSettings

logger = logging.getLogger("journey_engine.channels")


class LogChannel(Channel):
    """Logs the message at INFO, with its fields in the record's ``channel_message``."""

    name = "log"
    requires_content = ("text",)
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
