"""The deployed journeys as a worker sees them: compiled once, refreshed after a deploy."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from engine.definitions import Journey
from engine.deploy import compile_version
from engine.storage.models import Enrollment, JourneyRecord, JourneyVersion


@dataclass(frozen=True)
class Deployed:
    """The running set: journeys by id (current versions) and their status."""

    current: dict[str, Journey]
    versions: dict[str, int]
    status: dict[str, str]
    stamp: tuple[object, ...]
    #: every version some enrollment may still run on: the current ones and older
    #: versions with active enrollments (a deploy is what changes this set)
    live: tuple[Journey, ...] = ()

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

    def get(self, journey_id: str, version: int, session: Session | None = None) -> Journey:
        """Return version ``version`` of ``journey_id``, compiling it on first use.

        Pass the caller's ``session`` when inside a transaction: on SQLite a second
        connection would wait for the first one's write lock.

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
                with self._session(session) as use:
                    row = use.execute(
                        select(JourneyVersion).where(
                            JourneyVersion.journey_id == journey_id, JourneyVersion.version == version
                        )
                    ).scalar_one_or_none()
                if row is None:
                    raise KeyError(f"{journey_id}@{version}")
                journey = compile_version(row.journey_id, row.version, row.source, row.templates, self._directory)
                self._versions[key] = journey
        return journey

    def add(self, journey_id: str, version: int, journey: Journey) -> None:
        """Serve ``journey`` as that deployed version without compiling the stored copy.

        The twin deploys journeys it has loaded already (possibly from text, not a file).
        """
        with self._lock:
            self._versions[(journey_id, version)] = journey

    def running(self, session: Session | None = None) -> Deployed:
        """Return the current versions of every deployed journey, and their status."""
        now = time.monotonic()
        if self._running is not None and now - self._checked < self.refresh:
            return self._running
        with self._session(session) as session:
            stamp = tuple(
                session.execute(
                    select(func.count(), func.max(JourneyRecord.updated_at)).select_from(JourneyRecord)
                ).one()
            )
            if self._running is not None and self._running.stamp == stamp:
                self._checked = now
                return self._running
            records = session.execute(select(JourneyRecord)).scalars().all()
            older = session.execute(
                select(Enrollment.journey_id, Enrollment.version).where(Enrollment.status == "active").distinct()
            ).all()
            current = {r.id: self.get(r.id, r.current_version, session) for r in records}
            versions = {r.id: r.current_version for r in records}
            live = list(current.values()) + [
                self.get(jid, version, session) for jid, version in older if versions.get(jid) != version
            ]
        self._running = Deployed(current, versions, {r.id: r.status for r in records}, stamp, tuple(live))
        self._checked = now
        return self._running

    @contextlib.contextmanager
    def _session(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
        else:
            with self.sessions() as own:
                yield own

    def invalidate(self) -> None:
        """Forget the running set (after a deploy in this process, or in tests)."""
        self._running = None
