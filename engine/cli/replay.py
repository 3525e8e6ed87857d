"""``journey replay``: the stored events of a window through changed and deployed journeys, side by side."""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from engine.cli.codes import RET_INVALID, RET_SERVICE
from engine.cli.common import fail, load_settings
from engine.cli.journeys import _files_or_fail, _paths
from engine.definitions import load_journeys
from engine.durations import DURATION_HELP, parse_duration
from engine.replay import APPROXIMATIONS, Result, replay as run_replay
from engine.segment import parse_time
from engine.twin import TwinStuck


def moment(value: str, now: dt.datetime) -> dt.datetime:
    """``30d`` (that long before ``now``) or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a duration ({DURATION_HELP}) nor an ISO 8601 time "
                                 "(e.g. 2026-11-01T00:00:00Z)") from None


@click.command()
@_paths
@click.option("--since", default="30d", show_default=True, metavar="WHEN",
              help="The window's start: a duration before now (30d) or an ISO 8601 time.")
@click.option("--until", metavar="WHEN", help="The window's end: a duration before now or an ISO 8601 time; default now.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
def replay(paths: tuple[Path, ...], since: str, until: str | None, as_json: bool) -> None:
    """Replay the events stored in DATABASE_URL through the journeys in PATHS and the ones deployed there.

    Reads the database only (a read-only transaction) and sends nothing: both sets run on
    twins, from the customer profiles as they stood at the window's start. Prints, side
    by side, who would enter each journey, sends per step and channel, holds by reason
    and conversions.
    """
    result = load_journeys(_files_or_fail(paths))
    if result.errors:
        for error in result.errors:
            click.echo(f"Error: {error}", err=True)
        sys.exit(RET_INVALID)
    settings = load_settings()
    # The window is the operator's wall clock (a CLI argument); the twins run on their own.
    now = dt.datetime.now(dt.timezone.utc)
    start, end = moment(since, now), moment(until, now) if until else now
    if start >= end:
        fail(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})", RET_INVALID)
    try:
        with tempfile.TemporaryDirectory(prefix="journey-replay-") as directory:
            outcome = run_replay(settings.database_url, result.journeys.values(), start, end,
                                 settings=settings, directory=Path(directory))
    except (ValueError, TwinStuck) as exc:
        fail(str(exc), RET_INVALID)
    except SQLAlchemyError as exc:
        fail(f"cannot read {settings.database_url.split('@')[-1]}: {exc.__class__.__name__}: {exc}", RET_SERVICE)
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), indent=2))
        return
    click.echo(table(outcome))


def table(result: Result) -> str:
    """The two summaries side by side, a ``*`` where they differ."""
    left, right = result.deployed.rows(), result.changed.rows()
    labels = sorted(set(left) | set(right), key=lambda label: (label.split(" ", 1)[1], label))
    width = max([len(label) for label in labels] + [10])
    lines = [
        f"Replay of {result.events} events from {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC "
        f"({result.customers} customers known at the start)",
        "deployed: " + (", ".join(f"{j}@{v}" for j, v in sorted(result.deployed_journeys.items())) or "none"),
        "changed:  " + (", ".join(sorted(result.changed_journeys)) or "none"),
        "",
        f"  {'':<{width}}  {'deployed':>8}  {'changed':>8}",
    ]
    for label in labels:
        a, b = left.get(label, 0), right.get(label, 0)
        lines.append(f"{'*' if a != b else ' '} {label:<{width}}  {a:>8}  {b:>8}")
    if not labels:
        lines.append("  (no journey entered)")
    if result.skipped:
        lines += ["", f"Skipped {len(result.skipped)} stored events that are not valid Segment messages:"]
        lines += [f"  {why}" for why in result.skipped[:10]]
        if len(result.skipped) > 10:
            lines.append(f"  ... and {len(result.skipped) - 10} more (--json lists them all)")
    lines += ["", "Approximations: " + "; ".join(APPROXIMATIONS) + "."]
    return "\n".join(lines)


__all__ = ["moment", "replay", "table"]

COMMANDS = [replay]
