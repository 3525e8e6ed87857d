"""Channel adapters: how a rendered message leaves the engine.

:class:`Channel` is the small base class (``send(message) -> Result``, ``close()``);
one module per adapter (``email``, ``sms``, ``webhook``, ``push``, ``retargeting``,
``log``), :class:`StubChannel` as the in-memory twin for tests, and a registry of the
installed ones through the ``journey_engine.channels`` entry points.
"""

from __future__ import annotations

from channels.base import Channel, Message, Recipient, Result
from channels.registry import ChannelInfo, available, catalog, channel_class, load, load_all
from channels.settings import ChannelSettings, SmtpServer
from channels.stub import StubChannel

__all__ = [
    "Channel",
    "ChannelInfo",
    "ChannelSettings",
    "Message",
    "Recipient",
    "Result",
    "SmtpServer",
    "StubChannel",
    "available",
    "catalog",
    "channel_class",
    "load",
    "load_all",
]
