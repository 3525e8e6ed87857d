"""Installed channels, found through the ``journey_engine.channels`` entry-point group.

A package adds a channel by declaring, in its ``pyproject.toml``::

    [project.entry-points."journey_engine.channels"]
    whatsapp = "my_package.whatsapp:WhatsAppChannel"

The class is a :class:`~channels.base.Channel` subclass. Names are listed without
importing anything; a class is imported when a channel of that name is loaded, so one
broken plugin does not stop the others (flask's ``_load_plugin_commands`` does the same).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
import functools
from importlib.metadata import EntryPoint, entry_points

from channels.base import Channel
from channels.settings import ChannelSettings
from engine.errors import ConfigError, did_you_mean

GROUP = "journey_engine.channels"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelInfo:
    """What a journey file may write for a channel, for the journey loader.

    Attributes:
        parts: the template parts the channel uses (``subject``, ``text``...).
        required: the parts a send must render: one of each tuple.
    """

    name: str
    parts: tuple[str, ...]
    required: tuple[tuple[str, ...], ...]


def _entry_points() -> dict[str, EntryPoint]:
    return dict(_installed())


@functools.cache
def _installed() -> dict[str, EntryPoint]:
    # Scanning every installed distribution's metadata takes tens of milliseconds: once
    # per process is enough (a twin is built per test).
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """The names of the installed channels, sorted."""
    return sorted(_entry_points())


def channel_class(name: str) -> type[Channel]:
    """Import the adapter class registered as ``name``.

    Raises:
        ConfigError: no channel has that name, or its plugin cannot be imported or is
            not a Channel.
    """
    points = _entry_points()
    if name not in points:
        installed = ", ".join(sorted(points)) or "none"
        raise ConfigError(f"unknown channel {name!r}.{did_you_mean(name, points)} (installed: {installed})"
                          .replace(". (", " ("))
    point = points[name]
    try:
        cls = point.load()
    except Exception as exc:  # a third-party plugin may fail in any way on import
        raise ConfigError(f"the channel {name!r} ({point.value}) cannot be loaded: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise ConfigError(f"the channel {name!r} ({point.value}) is not a channels.base.Channel subclass")
    return cls


def load(name: str, settings: ChannelSettings) -> Channel:
    """Build the adapter registered as ``name`` from ``settings``.

    Raises:
        ConfigError: unknown channel, broken plugin, or a setting it needs is missing.
    """
    return channel_class(name).from_settings(settings)


def load_all(names: list[str] | None, settings: ChannelSettings) -> dict[str, Channel]:
    """Build the adapters named (default: every installed one), reporting all problems at once.

    Raises:
        ConfigError: one line per channel that cannot be built.
    """
    channels: dict[str, Channel] = {}
    problems = []
    for name in available() if names is None else names:
        try:
            channels[name] = load(name, settings)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        for channel in channels.values():
            channel.close()
        raise ConfigError("\n".join(problems))
    return channels


def deduplicating() -> set[str]:
    """The installed channels whose provider drops a second message with the same
    idempotency key (:attr:`Channel.deduplicates`); a plugin that cannot be imported is left out."""
    names = set()
    for name in available():
        try:
            if channel_class(name).deduplicates:
                names.add(name)
        except ConfigError as exc:
            log.error("%s", exc)
    return names


def catalog() -> dict[str, ChannelInfo]:
    """Every installed channel that can be imported, with its template parts, by name.

    A plugin that cannot be imported is left out (and logged), so one broken package
    does not stop journeys from loading; :func:`load` names its error.
    """
    infos = {}
    for name in available():
        try:
            cls = channel_class(name)
        except ConfigError as exc:
            log.error("%s", exc)
            continue
        groups = [(need,) if isinstance(need, str) else tuple(need) for need in cls.requires_content]
        required = tuple(group for group in groups if all(part in cls.parts for part in group))
        infos[name] = ChannelInfo(name, tuple(cls.parts), required)
    return infos
