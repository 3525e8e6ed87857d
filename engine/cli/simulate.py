"""``journey simulate``: run journeys against recorded events on the twin, sending nothing."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.cli.journeys import _files_or_fail, _paths
from engine.definitions import load_journeys
from engine.durations import DURATION_HELP, parse_duration
from engine.errors import ConfigError
from engine.segment import parse_time
from engine.settings import Settings
from engine.twin import DEFAULT_HORIZON, Effect, Twin, TwinStuck, deliveries


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def read_events(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Read a JSON-lines file of Segment events, each with where it is (``file:line``).

    Blank lines and ``#`` comments are skipped.

    Raises:
        click.ClickException: a line is not a JSON object, names no customer, or has a
            timestamp that is not one; the message names the line.
    """
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        where = f"{path}:{number}"
        if not text or text.startswith("#"):
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(item, dict):
            raise click.ClickException(f"{where}: expected a JSON object (a Segment event), got {type(item).__name__}")
        if not (item.get("userId") or item.get("anonymousId")):
            raise click.ClickException(f"{where}: the event has neither userId nor anonymousId")
        if item.get("timestamp") is not None:
            try:
                parse_time(item["timestamp"])
            except ValueError as exc:
                raise click.ClickException(f"{where}: timestamp {exc}") from None
        events.append((where, item))
    return events


@click.command()
@_paths
@click.option("--events", "events_path", required=True, type=click.Path(path_type=Path), help="Segment events, one JSON object a line.")
@click.option("--until", callback=_duration, metavar="DURATION",
              help=f"How long to run after the last event ({DURATION_HELP}); default: until nothing is due (at most 365d).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per effect instead of timelines.")
def simulate(paths: tuple[Path, ...], events_path: Path, until: Any, as_json: bool) -> None:
    """Run the journeys in PATHS (files or directories; default journeys/) against recorded events.

    The engine's own pipeline runs (profiles, policy, rendering, delivery) on an in-memory
    database and a virtual clock that jumps from each event to each timer and deferred
    send; nothing is sent. Prints each customer's timeline (sends, holds and deferrals
    with their reasons, stages, points, exits), or with --json one object per effect.
    """
    if not events_path.exists():
        click.echo(f"Error: no such file or directory: {events_path}", err=True)
        sys.exit(RET_NOT_FOUND)
    if events_path.is_dir():
        files = sorted(events_path.glob("*.jsonl"))
        example = f", such as --events {files[0]}" if files else ""
        click.echo(f"Error: --events {events_path} is a directory; give one file of events (JSON lines){example}", err=True)
        sys.exit(RET_INVALID)
    result = load_journeys(_files_or_fail(paths))
    if result.errors:
        for error in result.errors:
            click.echo(f"Error: {error}", err=True)
        sys.exit(RET_INVALID)
    events = read_events(events_path)
    try:
        # The engine's settings (frequency caps, sweep timing) as the workers read them;
        # the database and the broker are the twin's own.
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    stamps = [parse_time(e["timestamp"]) for _, e in events if e.get("timestamp") is not None]
    start = min(stamps, default=None) or dt.datetime.now(dt.timezone.utc)  # no timestamps: they happen now
    with Twin(result.journeys.values(), start=start, settings=settings) as twin:
        try:
            for where, event in sorted(events, key=lambda item: parse_time(item[1]["timestamp"]) if item[1].get("timestamp") else start):
                try:
                    twin.send(event)
                except ValueError as exc:
                    raise click.ClickException(f"{where}: {exc}") from None
            twin.finish(until)
        except TwinStuck as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            for effect in twin.effects():
                click.echo(json.dumps(effect.to_dict(), sort_keys=False, default=str))
            return
        click.echo(timelines(twin, until is None))


def timelines(twin: Twin, open_ended: bool = False, line: Callable[[Effect], str] | None = None) -> str:
    """Each customer's timeline (times in UTC), then a summary line.

    ``line``: how each effect reads (default :func:`describe`; the demo says which sends
    went out and which would have).
    """
    line = line or describe
    everything = twin.effects()
    by_customer: dict[str, list[Effect]] = {}
    for effect in everything:
        by_customer.setdefault(effect.customer, []).append(effect)
    lines: list[str] = []
    for name in twin.customers():
        person = twin.profile(name)
        if person is None:  # pragma: no cover - listed customers exist
            continue
        bits = [f"stage {person.stage or '-'}", f"{person.points} points"]
        if person.referral_codes:
            bits.append("codes " + ", ".join(person.referral_codes.values()))
        lines.append(f"{name} ({', '.join(bits)})")
        for effect in by_customer.get(name, []):
            lines.append(f"  {effect.at:%Y-%m-%d %H:%M}  {effect.journey or '':<20} {effect.step or '':<16} {line(effect)}".rstrip())
        lines.append("")
    lines.append(summary(twin, everything))
    if open_ended:
        lines.append(f"(ran until nothing was due, at most {DEFAULT_HORIZON.days}d after the last event; times in UTC)")
    return "\n".join(lines)


def summary(twin: Twin, everything: list[Effect] | None = None) -> str:
    """One line: customers, enrollments by status, deliveries by outcome."""
    everything = twin.effects() if everything is None else everything
    statuses = Counter(e.detail["status"] for e in everything if e.effect == "exit")
    entered = sum(1 for e in everything if e.effect == "enter")
    if entered > sum(statuses.values()):
        statuses["active"] = entered - sum(statuses.values())
    outcomes = Counter(d.status for d in twin.read(deliveries))
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    sends = outcomes.pop("sent", 0)
    people = len(twin.customers())
    text = (f"{people} customer{'' if people == 1 else 's'}, {entered} enrollment{'' if entered == 1 else 's'} "
            f"({by_status or 'none'}), {sends} send{'' if sends == 1 else 's'}")
    return text + "".join(f", {n} {status}" for status, n in sorted(outcomes.items()))


def describe(effect: Effect, sent: str = "send", note: str = "") -> str:
    """A short line for people: what happened, with the message's subject or text, or why it did not go.

    ``sent``: the word for a delivery that went (``journey simulate`` sends nothing, so
    ``send``); ``note``: what follows it, in brackets.
    """
    d = effect.detail
    if effect.effect == "event":
        shown = ", ".join(f"{k}={v}" for k, v in list((d.get("data") or {}).items())[:3])
        return f"<- {d.get('event')}" + (f" ({shown})" if shown else "")
    if effect.effect in ("send", "deferred", "held", "failed", "dead", "retrying", "rate_limited"):
        if d.get("audience"):
            where = "from" if d.get("action") == "remove" else "to"
            what = f"{d.get('channel')} ({d.get('kind')}): {d.get('action')} {where} audience {d['audience']}"
        else:
            what = f"{d.get('channel')} {d.get('template') or 'inline'} ({d.get('kind')})"
        if effect.effect != "send":
            return f"{effect.effect.replace('_', ' ').upper()} {what}: {d.get('reason')}"
        content = d.get("content") or {}
        headline = content.get("subject") or content.get("title") or content.get("text") or content.get("body") or ""
        headline = " ".join(str(headline).split())
        after = f" ({note})" if note else ""
        if d.get("audience") or not headline:
            return f"{sent} {what}{after}"
        return f"{sent} {what}: {headline[:70] + ('...' if len(headline) > 70 else '')!r}{after}"
    if effect.effect == "enter":
        return f"enter (on {d.get('trigger')})"
    if effect.effect == "stage":
        return f"stage {d.get('from') or '-'} -> {d.get('to')}"
    if effect.effect == "points":
        return f"{d.get('amount'):+d} points ({d.get('reason') or 'no reason'}), balance {d.get('balance')}"
    if effect.effect == "no_referrer":
        return f"no referrer points: {d.get('reason')} ({d.get('referral_code')!r})"
    if effect.effect == "referral":
        return f"referral code {d.get('code')} ({d.get('program')})"
    if effect.effect == "exit":
        reason = d.get("reason")
        return f"{d.get('status')}" + (f": {reason}" if reason and reason != d.get("status") else "")
    return effect.effect


__all__ = ["describe", "read_events", "simulate", "summary", "timelines"]

COMMANDS = [simulate]
