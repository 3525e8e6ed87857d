"""Journey Engine: customer journeys as code, Segment-compatible ingestion, Dramatiq workers."""

from __future__ import annotations

from engine.durations import format_duration, parse_duration
from engine.environment import read_settings
from engine.errors import (
    AuthError,
    ChannelError,
    ConfigError,
    DefinitionError,
    JourneyError,
    NotFoundError,
    PayloadError,
    Problem,
    RuleError,
    StorageError,
    TemplateError,
)
from engine.settings import Settings

__all__ = [
    "AuthError",
    "ChannelError",
    "ConfigError",
    "DefinitionError",
    "JourneyError",
    "NotFoundError",
    "PayloadError",
    "Problem",
    "RuleError",
    "Settings",
    "StorageError",
    "TemplateError",
    "format_duration",
    "parse_duration",
    "read_settings",
]
