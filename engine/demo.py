"""The demo's scenes: each sample file of ``journeys/samples`` played on its own twin.

A sample file is one scene: its own customers, on its own timeline. Each scene runs on a
new :class:`~engine.twin.Twin` (an in-memory database, the engine's real pipeline, a
virtual clock) with every journey deployed, from the file's first event until nothing is
due, exactly as ``journey simulate journeys --events journeys/samples/FILE.jsonl`` does.
So two files that both name ``ada`` tell two stories, and running the demo again tells
the same ones: nothing is written to the user's database, and nothing is stamped in its
future. ``journey demo`` and ``journey dev --demo`` (:mod:`engine.cli.demo`) tell them.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from channels.base import Channel
from engine.definitions import Journey
from engine.profiles import STAGES
from engine.segment import parse_time
from engine.settings import Settings
from engine.twin import Twin, VirtualClock

#: Where the scenes' sample files are, under the journeys' directory.
SAMPLES = "samples"


@dataclass(frozen=True)
class Scene:
    """One sample file: its events, told on their own timeline.

    Attributes:
        id: the file's stem (the id of the journey it shows off, for the shipped ones).
        title: that journey's name, or the stem.
        path: the sample file.
    """

    id: str
    title: str
    path: Path


def scenes(directory: Path, journeys: Mapping[str, Journey]) -> list[Scene]:
    """The scenes of ``directory/samples/*.jsonl``, in funnel order of the journey each is named after.

    A file named after no journey comes last, by name.
    """
    def order(path: Path) -> tuple[int, str]:
        journey = journeys.get(path.stem)
        return (STAGES.index(journey.stage) if journey is not None and journey.stage in STAGES else len(STAGES),
                path.stem)

    found = sorted((directory / SAMPLES).glob("*.jsonl"), key=order)
    return [Scene(p.stem, journeys[p.stem].name if p.stem in journeys else p.stem, p) for p in found]


def start(events: Iterable[Mapping[str, Any]]) -> dt.datetime:
    """Where a scene's clock starts: its earliest timestamp (now, if no event has one)."""
    stamps = [parse_time(e["timestamp"]) for e in events if e.get("timestamp") is not None]
    return min(stamps, default=None) or dt.datetime.now(dt.timezone.utc)


def play(events: Iterable[Mapping[str, Any]], journeys: Iterable[Journey], *, settings: Settings,
         adapters: Mapping[str, Channel] | None = None) -> Twin:
    """Run one scene on a new twin: ``journeys`` deployed, ``events`` in time order, then until nothing is due.

    Args:
        events: the scene's Segment events; the clock starts at the earliest timestamp.
        settings: the engine's settings (caps, quiet hours' sweep timing) as the workers
            read them; the twin's database and broker are its own.
        adapters: real adapters for the channels the user configured; every other channel
            is the twin's recording stub, which sends nothing.

    Returns:
        The twin, for the caller to read and close.

    Raises:
        ValueError: an event is not a valid Segment message.
        TwinStuck: the scene stopped making progress.
    """
    events = list(events)
    twin = Twin(journeys, start=start(events), settings=settings)
    try:
        twin.services.adapters.update(adapters or {})
        twin.run(events)
    except BaseException:
        twin.close()
        raise
    return twin


def wait_for_http(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers 200, failing early if ``process`` (the server) died.

    Raises:
        RuntimeError: the process exited first.
        TimeoutError: nothing answered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


__all__ = ["SAMPLES", "Scene", "VirtualClock", "play", "scenes", "start", "wait_for_http"]
