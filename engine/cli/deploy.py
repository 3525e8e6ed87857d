"""``journey plan``, ``deploy``, ``pause``, ``resume``, ``archive`` and ``journeys``."""

from __future__ import annotations

from pathlib import Path

import click

from engine import audit
from engine import deploy as deploying
from engine.analytics import list_journeys
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.cli.common import fail, services_for
from engine.cli.journeys import _files_or_fail
from engine.errors import DefinitionError
from engine.storage.db import check_current

_PATHS = click.argument("paths", nargs=-1, type=click.Path(exists=True))


def _snapshots(paths: tuple[str, ...]) -> list[deploying.Snapshot]:
    files = _files_or_fail(tuple(Path(p) for p in paths))
    snapshots, errors = [], []
    for file in files:
        try:
            snapshots.append(deploying.snapshot(file))
        except DefinitionError as exc:
            errors.append(str(exc))
    if errors:
        fail("nothing deployed; fix these first (`journey validate`):\n" + "\n".join(errors), RET_INVALID)
    seen: dict[str, str] = {}
    for snap in snapshots:
        if snap.id in seen:
            fail(f"two files define the journey id {snap.id!r}: {seen[snap.id]} and {snap.journey.path}", RET_INVALID)
        seen[snap.id] = str(snap.journey.path)
    return snapshots


_ALL = click.option("--all", "show_all", is_flag=True,
                    help="Also list the deployed journeys that PATHS leave out (listed anyway without PATHS).")


@click.command("plan")
@_PATHS
@_ALL
def plan(paths: tuple[str, ...], show_all: bool) -> None:
    """Show what deploying PATHS (default: journeys/) would change, field by field."""
    snapshots = _snapshots(paths)
    with services_for() as services:
        check_current(services.engine)
        with services.sessions() as session:
            changes = deploying.plan(session, snapshots)
    _print(changes, show_all or not paths)


@click.command("deploy")
@_PATHS
@_ALL
def deploy(paths: tuple[str, ...], show_all: bool) -> None:
    """Deploy PATHS (default: journeys/) as new versions of the journeys that changed."""
    snapshots = _snapshots(paths)
    with services_for() as services:
        check_current(services.engine)
        with services.sessions.begin() as session:
            changes = deploying.deploy(session, snapshots, services.clock())
    _print(changes, show_all or not paths)
    done = [c for c in changes if c.kind in ("new", "changed")]
    click.echo(f"deployed {len(done)} journey version{'s' if len(done) != 1 else ''}")


def _status_command(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("journey_id")
    def command(journey_id: str) -> None:
        with services_for() as services:
            check_current(services.engine)
            try:
                with services.sessions.begin() as session:  # audited, as the API and the console do it
                    deploying.change_status(session, journey_id, name, services.clock(), audit.Actor.command_line())
            except KeyError:
                fail(f"no deployed journey has the id {journey_id!r}; see `journey journeys`", RET_NOT_FOUND)
        click.echo(f"{journey_id}: {deploying.STATUS_ACTIONS[name]}")

    return command


@click.command("journeys")
def journeys() -> None:
    """List the deployed journeys: version, status, running enrollments."""
    with services_for() as services:
        check_current(services.engine)
        with services.sessions() as session:
            deployed = list_journeys(session)  # what GET /v1/journeys answers
    if not deployed:
        click.echo("no journeys deployed; run `journey deploy`")
        return
    click.echo(f"{'JOURNEY':<28} {'VERSION':>7}  {'STATUS':<9} RUNNING")
    for journey in deployed:
        click.echo(f"{journey['id']:<28} {journey['version']:>7}  {journey['status']:<9} {journey['active']}")


def _print(changes: list[deploying.Change], show_others: bool) -> None:
    """Each change; the deployed journeys not in the files given only when asked (or when none were given)."""
    others = [c for c in changes if c.kind == "not in files"]
    for change in changes:
        if change.kind != "not in files" or show_others:
            for line in change.describe():
                click.echo(line)
    if others and not show_others:
        noun = "journey is" if len(others) == 1 else "journeys are"
        click.echo(f"({len(others)} other deployed {noun} not in these files and left as they are; --all lists them)")


COMMANDS = [
    plan,
    deploy,
    journeys,
    _status_command("pause", "Pause JOURNEY_ID: no new enrollments; running ones hold where they are."),
    _status_command("resume", "Resume a paused or archived JOURNEY_ID."),
    _status_command("archive", "Archive JOURNEY_ID: like pause, and left out of plans."),
]
