"""Durations as people write them in YAML and environment variables: ``30s``, ``15m``, ``3d``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"^(?:\d+[smhdw])+$")

DURATION_HELP = "a duration such as 30s, 15m, 1h, 3d, 2w or 1d12h"


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``"3d"`` or ``"1h30m"`` into a :class:`timedelta`.

    Raises:
        ValueError: the text is not a duration; the message says what is expected.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected {DURATION_HELP}, got {text!r}")
    compact = text.strip().lower()
    if not _WHOLE.match(compact):
        raise ValueError(f"{text!r} is not a duration; write {DURATION_HELP}")
    total = timedelta()
    try:
        for amount, unit in _PART.findall(compact):
            total += timedelta(**{_UNITS[unit]: int(amount)})
    except (OverflowError, ValueError):
        raise ValueError(f"{text!r} is longer than any duration can be (at most {timedelta.max.days}d)") from None
    return total


def format_duration(value: timedelta) -> str:
    """Format a :class:`timedelta` the way :func:`parse_duration` reads it (``"1d12h"``)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
