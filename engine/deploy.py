"""Deploying journeys: snapshots of journey files, the plan of a change, and versions.

A deploy stores each changed journey as a new version: its YAML and the templates it
uses, exactly as they were. Workers run versions from the database, never from the
files, and an enrollment keeps the version it started on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from engine.definitions import Journey, SendStep, load_journey, load_text
from engine.definitions.source import read_yaml
from engine.storage.models import Enrollment, JourneyRecord, JourneyVersion, Timer

if TYPE_CHECKING:
    from engine.audit import Actor

STATUSES = ("active", "paused", "archived")


@dataclass(frozen=True)
class Snapshot:
    """A journey file and its templates, as they would be deployed."""

    journey: Journey
    source: str
    templates: dict[str, str]

    @property
    def id(self) -> str:
        return self.journey.id

    @property
    def checksum(self) -> str:
        digest = hashlib.sha256(self.source.encode("utf-8"))
        for name in sorted(self.templates):
            digest.update(b"\0" + name.encode("utf-8") + b"\0" + self.templates[name].encode("utf-8"))
        return digest.hexdigest()


def snapshot(path: str | Path) -> Snapshot:
    """Load and check ``path`` and capture its text and the template files its sends use.

    Raises:
        DefinitionError: the journey is invalid.
    """
    path = Path(path)
    journey = load_journey(path)
    directory = path.parent / "templates"
    names = {step.template for step in journey.steps if isinstance(step, SendStep) and step.template}
    templates = {
        file.name: file.read_text(encoding="utf-8")
        for name in sorted(names)
        for file in sorted(directory.glob(f"{name}.*.j2"))
    }
    return Snapshot(journey, path.read_text(encoding="utf-8"), templates)


def compile_version(journey_id: str, version: int, source: str, templates: dict[str, str], directory: Path) -> Journey:
    """Rebuild a deployed version into a runnable :class:`Journey`.

    The templates are written under ``directory`` (one folder per version), where the
    loader reads them, exactly as deployed.
    """
    folder = directory / f"{journey_id}@{version}" / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in templates.items():
        (folder / name).write_text(text, encoding="utf-8")
    return load_text(source, filename=f"{journey_id}@{version}", templates=folder,
                     templates_shown_as=f"{journey_id} v{version} templates")


@dataclass
class Change:
    """What deploying one journey would do."""

    journey_id: str
    kind: str  # new | changed | unchanged | not in files
    from_version: int | None = None
    to_version: int | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    running: int = 0
    waiting: dict[str, int] = field(default_factory=dict)  # at removed or changed steps
    status: str | None = None
    # What changed in each changed step, and in the rest of the journey (trigger, goal,
    # policy...): lines such as "wait 1h → 2h", by step id or by top-level key.
    step_fields: dict[str, list[str]] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """The change as lines for people."""
        head = {
            "new": f"+ {self.journey_id}: new journey, deploys as version {self.to_version}",
            "changed": f"~ {self.journey_id}: version {self.from_version} -> {self.to_version}",
            "unchanged": f"= {self.journey_id}: unchanged (version {self.from_version})",
            "not in files": f"? {self.journey_id}: deployed (version {self.from_version}, {self.status}) "
            "but not in these files; left as it is",
        }[self.kind]
        lines = [head]
        for label, steps in (("added", self.added), ("removed", self.removed)):
            if steps:
                lines.append(f"    steps {label}: {', '.join(steps)}")
        if self.changed:
            lines.append("    steps changed:")
            lines += [f"      {step}: {what}" for step in self.changed for what in self.step_fields.get(step, ["changed"])]
        if self.kind == "changed":
            for key, values in self.fields.items():
                lines += [f"    {key}: {line}" for line in values]
            same = [key for key in WATCHED if key not in self.fields]
            if same:
                lines.append(f"    {_series(same)} unchanged")
            lines.append(f"    {self.running} enrollments running stay on version {self.from_version}")
            for step, count in sorted(self.waiting.items()):
                what = "removed" if step in self.removed else "changed"
                lines.append(f"    {count} of them wait at step '{step}', which version {self.to_version} {what}")
        return lines


def plan(session: Session, snapshots: Iterable[Snapshot]) -> list[Change]:
    """Compare ``snapshots`` with what is deployed and say what a deploy would change."""
    snapshots = list(snapshots)
    deployed = _latest_versions(session)
    changes: list[Change] = []
    for snap in sorted(snapshots, key=lambda s: s.id):
        current = deployed.get(snap.id)
        if current is None:
            changes.append(Change(snap.id, "new", to_version=1, added=[s.id for s in snap.journey.steps]))
            continue
        record, version = current
        if version.checksum == snap.checksum:
            changes.append(Change(snap.id, "unchanged", from_version=version.version, status=record.status))
            continue
        added, removed, step_fields = _step_diff(version.source, version.templates, snap.source, snap.templates)
        changed = list(step_fields)
        running = _running_by_step(session, snap.id)
        changes.append(
            Change(
                snap.id,
                "changed",
                from_version=version.version,
                to_version=version.version + 1,
                added=added,
                removed=removed,
                changed=changed,
                running=sum(running.values()),
                waiting={step: n for step, n in running.items() if step in removed or step in changed},
                status=record.status,
                step_fields=step_fields,
                fields=_journey_diff(version.source, snap.source),
            )
        )
    present = {snap.id for snap in snapshots}
    for journey_id, (record, version) in sorted(deployed.items()):
        if journey_id not in present and record.status != "archived":
            changes.append(Change(journey_id, "not in files", from_version=version.version, status=record.status))
    return changes


def deploy(session: Session, snapshots: Iterable[Snapshot], now: datetime) -> list[Change]:
    """Store every new or changed journey as a new version; return the plan applied."""
    by_id = {snap.id: snap for snap in snapshots}
    changes = plan(session, by_id.values())
    for change in changes:
        if change.kind not in ("new", "changed"):
            continue
        snap = by_id[change.journey_id]
        record = session.get(JourneyRecord, change.journey_id)
        if record is None:
            record = JourneyRecord(id=change.journey_id, current_version=0, status="active", updated_at=now)
            session.add(record)
            session.flush()
        session.add(
            JourneyVersion(
                journey_id=change.journey_id,
                version=change.to_version,
                checksum=snap.checksum,
                source=snap.source,
                templates=snap.templates,
                trigger_event=snap.journey.trigger.event,
                deployed_at=now,
            )
        )
        record.current_version = change.to_version or record.current_version
        if record.status == "archived":
            release_timers(session, record.id)
            record.status = "active"
        record.updated_at = now
    session.flush()
    return changes


def set_status(session: Session, journey_id: str, status: str, now: datetime) -> JourneyRecord:
    """Pause, resume (``active``) or archive a deployed journey.

    Paused: no new enrollments; running ones wait where they are (their timers and
    events are held until it runs again). Archived: like paused, and hidden from plans.

    Raises:
        KeyError: no journey with that id is deployed.
        ValueError: ``status`` is not one of active, paused, archived.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    record = session.get(JourneyRecord, journey_id)
    if record is None:
        raise KeyError(journey_id)
    if status == "active" and record.status != "active":
        release_timers(session, journey_id)
    record.status, record.updated_at = status, now
    return record


#: The operator actions on a journey, and the status each sets.
STATUS_ACTIONS = {"pause": "paused", "resume": "active", "archive": "archived"}


def change_status(session: Session, journey_id: str, action: str, now: datetime,
                  actor: Actor) -> tuple[JourneyRecord, int]:
    """Pause, resume or archive a journey as an operator action (one of :data:`STATUS_ACTIONS`):
    :func:`set_status` and its row in the audit log (``journeys.pause``...), in the caller's transaction.

    The command line, the admin API and the console all call this.

    Returns:
        The journey as it is now, and the action's audit id.

    Raises:
        KeyError: no journey with that id is deployed.
    """
    from engine import audit  # here: audit imports the policy layer, which loads deployed journeys from this module

    record = set_status(session, journey_id, STATUS_ACTIONS[action], now)
    entry = audit.start(session, actor, f"journeys.{action}", {"journey": journey_id}, now, 1, finished=True)
    return record, entry


def release_timers(session: Session, journey_id: str) -> None:
    """Let the scheduler claim again the unfired timers of a journey that runs again.

    While it was paused or archived, a due timer was claimed once and left alone by the
    worker, and the sweep leaves it be (:func:`engine.scheduler.not_held_by_a_pause`):
    unclaimed now, the scheduler's next tick fires it.
    """
    session.execute(
        update(Timer)
        .where(Timer.fired_at.is_(None), Timer.enqueued_at.is_not(None),
               Timer.enrollment_id.in_(select(Enrollment.id).where(Enrollment.journey_id == journey_id,
                                                                   Enrollment.status == "active")))
        .values(enqueued_at=None)
    )


def _latest_versions(session: Session) -> dict[str, tuple[JourneyRecord, JourneyVersion]]:
    rows = session.execute(
        select(JourneyRecord, JourneyVersion).join(
            JourneyVersion,
            (JourneyVersion.journey_id == JourneyRecord.id) & (JourneyVersion.version == JourneyRecord.current_version),
        )
    ).all()
    return {record.id: (record, version) for record, version in rows}


def _running_by_step(session: Session, journey_id: str) -> dict[str, int]:
    rows = session.execute(
        select(Enrollment.step, func.count())
        .where(Enrollment.journey_id == journey_id, Enrollment.status == "active")
        .group_by(Enrollment.step)
    ).all()
    return {step or "(starting)": count for step, count in rows}


def _step_diff(
    old_source: str, old_templates: dict[str, str], new_source: str, new_templates: dict[str, str]
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The steps added, removed, and changed (with what changed in each, in the new file's order)."""
    old, new = _steps(old_source), _steps(new_source)
    added = [step for step in new if step not in old]
    removed = [step for step in old if step not in new]
    changed: dict[str, list[str]] = {}
    for step, body in new.items():
        if step not in old:
            continue
        what = _differences(old[step], body, skip=("id",))
        template = (body.get("send") or {}).get("template") if isinstance(body.get("send"), dict) else None
        if template is not None:
            files = sorted(
                name for name in set(old_templates) | set(new_templates)
                if name.startswith(f"{template}.") and old_templates.get(name) != new_templates.get(name)
            )
            if files:
                what.append(f"template {template}: {', '.join(files)} changed")
        if what:
            changed[step] = what
    return added, removed, changed


#: The parts of a journey besides its steps that a plan always reports on, changed or not.
WATCHED = ("trigger", "goal", "policy")
_IGNORED = ("steps", "sample", "description")  # steps have their own lines; the rest runs nothing


def _journey_diff(old_source: str, new_source: str) -> dict[str, list[str]]:
    """What changed outside the steps, by top-level key: the trigger, goal, policy, entry, exit_on..."""
    old, new = _document(old_source), _document(new_source)
    changes: dict[str, list[str]] = {}
    for key in list(WATCHED) + [k for k in {**old, **new} if k not in WATCHED and k not in _IGNORED]:
        if old.get(key) != new.get(key):
            if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                changes[key] = _differences(old[key], new[key])
            else:
                changes[key] = [f"{_shown(old.get(key))} → {_shown(new.get(key))}"]
    return changes


def _differences(old: Any, new: Any, path: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """``path old → new`` for each value that differs, descending into mappings and same-length lists."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in list(old) + [k for k in new if k not in old]:
            if key not in skip:
                lines += _differences(old.get(key, _MISSING), new.get(key, _MISSING), f"{path}.{key}" if path else str(key))
        return lines
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new, strict=True)) for line in _differences(a, b, f"{path}[{i}]")]
    if old == new:
        return []
    return [f"{path} {_shown(old)} → {_shown(new)}" if path else f"{_shown(old)} → {_shown(new)}"]


_MISSING = object()


def _shown(value: Any) -> str:
    if value is _MISSING or value is None:
        return "(none)"
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _series(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _document(source: str) -> dict[str, Any]:
    data = read_yaml(source).data  # as the loader reads it: 09:00 is a time, not 540
    return data if isinstance(data, dict) else {}


def _steps(source: str) -> dict[str, dict[str, Any]]:
    return {str(step.get("id")): step for step in _document(source).get("steps", []) if isinstance(step, dict)}
