"""The deployed journeys as a worker sees them: compiled once, refreshed after a deploy."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from engine.definitions import Journey
from engine.deploy import compile_version
from engine.storage.models import JourneyRecord, JourneyVersion


@dataclass(frozen=True)
class Deployed:
    """The running set: journeys by id (current versions) and their status."""

    current: dict[str, Journey]
    status: dict[str, str]
    stamp: tuple[object, ...]

    def active(self) -> list[Journey]:
        """Journeys that take new enrollments."""
        return [j for jid, j in self.current.items() if self.status.get(jid) == "active"]


class DeployedJourneys:
    """Compiles each deployed version once per process and notices new deploys.

    ``get(journey_id, version)`` serves any version (enrollments keep theirs);
    ``running()`` is the current set, re-read when the journeys table changed, checked at
    most every ``refresh`` seconds.
    """

    def __init__(self, sessions: sessionmaker[Session], refresh: float = 2.0) -> None:
        self.sessions = sessions
        self.refresh = refresh
        self._versions: dict[tuple[str, int], Journey] = {}
        self._running: Deployed | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._directory = Path(tempfile.mkdtemp(prefix="journey-versions-"))

    def get(self, journey_id: str, version: int) -> Journey:
        """Return version ``version`` of ``journey_id``, compiling it on first use.

        Raises:
            KeyError: no such version is deployed.
        """
        key = (journey_id, version)
        journey = self._versions.get(key)
        if journey is not None:
            return journey
        with self._lock:
            journey = self._versions.get(key)
            if journey is None:
                with self.sessions() as session:
                    row = session.execute(
                        select(JourneyVersion).where(
                            JourneyVersion.journey_id == journey_id, JourneyVersion.version == version
                        )
                    ).scalar_one_or_none()
                if row is None:
                    raise KeyError(f"{journey_id}@{version}")
                journey = compile_version(row.journey_id, row.version, row.source, row.templates, self._directory)
                self._versions[key] = journey
        return journey

    def running(self) -> Deployed:
        """Return the current versions of every deployed journey, and their status."""
        now = time.monotonic()
        if self._running is not None and now - self._checked < self.refresh:
            return self._running
        with self.sessions() as session:
            stamp = tuple(
                session.execute(
                    select(func.count(), func.max(JourneyRecord.updated_at)).select_from(JourneyRecord)
                ).one()
            )
            if self._running is not None and self._running.stamp == stamp:
                self._checked = now
                return self._running
            records = session.execute(select(JourneyRecord)).scalars().all()
        current = {r.id: self.get(r.id, r.current_version) for r in records}
        self._running = Deployed(current, {r.id: r.status for r in records}, stamp)
        self._checked = now
        return self._running

    def invalidate(self) -> None:
        """Forget the running set (after a deploy in this process, or in tests)."""
        self._running = None
