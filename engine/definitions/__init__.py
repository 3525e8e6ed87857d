"""Journeys as code: the file format, the loader that checks it, lint and graph.

The runtime loads journeys with :func:`load_journeys` (a directory or files) or
:func:`load_journey` (one file), and walks the :class:`Journey` model.
"""

from __future__ import annotations

from engine.definitions.catalog import CHANNELS, STAGES, installed_channels
from engine.definitions.document import json_schema, json_schema_text
from engine.definitions.loader import LoadResult, journey_files, load_journey, load_journeys, load_text
from engine.definitions.model import (
    BranchCase,
    BranchStep,
    EndEvent,
    Entry,
    ExitStep,
    Journey,
    JourneyPolicy,
    QuietHours,
    ReferralStep,
    RewardStep,
    SendStep,
    SplitPath,
    SplitStep,
    Step,
    Trigger,
    UpdateStep,
    WaitStep,
    WaitUntilStep,
)
from engine.settings import FrequencyCap

__all__ = [
    "CHANNELS",
    "STAGES",
    "BranchCase",
    "BranchStep",
    "EndEvent",
    "Entry",
    "ExitStep",
    "FrequencyCap",
    "Journey",
    "JourneyPolicy",
    "LoadResult",
    "QuietHours",
    "ReferralStep",
    "RewardStep",
    "SendStep",
    "SplitPath",
    "SplitStep",
    "Step",
    "Trigger",
    "UpdateStep",
    "WaitStep",
    "WaitUntilStep",
    "installed_channels",
    "journey_files",
    "json_schema",
    "json_schema_text",
    "load_journey",
    "load_journeys",
    "load_text",
]
