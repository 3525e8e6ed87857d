"""The names a journey may use that are not its own: lifecycle stages and channels.

Kept in one place so that the channel list can become a registry of installed adapters
(entry points) without touching the loader.
"""

from __future__ import annotations

#: The lifecycle stages, in funnel order.
STAGES: tuple[str, ...] = ("awareness", "consideration", "purchase", "retention", "advocacy")

#: Installed channels, and the template parts each needs (any one of a tuple will do).
CHANNELS: dict[str, tuple[tuple[str, ...], ...]] = {
    "email": (("subject",), ("text", "html")),
    "sms": (("text",),),
    "push": (("text",),),
    "webhook": (("body",),),
    "retargeting": (),
    "log": (("text",),),
}

#: Template parts each channel may use.
CHANNEL_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "text"),
    "webhook": ("body",),
    "retargeting": (),
    "log": ("text",),
}


def installed_channels() -> list[str]:
    """The channel names a ``send`` step may use."""
    return list(CHANNELS)
