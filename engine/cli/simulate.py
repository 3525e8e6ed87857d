"""``journey simulate``: run journeys against recorded events on a virtual clock, sending nothing."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.definitions import journey_files, load_journeys
from engine.durations import DURATION_HELP, parse_duration
from engine.simulate import DEFAULT_HORIZON, Effect, Simulator


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def read_events(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file of Segment events; blank lines and ``#`` comments are skipped.

    Raises:
        click.ClickException: a line is not a JSON object; the message names the line.
    """
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(item, dict):
            raise click.ClickException(f"{path}:{number}: expected a JSON object (a Segment event), got {type(item).__name__}")
        if not (item.get("userId") or item.get("anonymousId")):
            raise click.ClickException(f"{path}:{number}: the event has neither userId nor anonymousId")
        events.append(item)
    return events


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--events", "events_path", required=True, type=click.Path(path_type=Path), help="Segment events, one JSON object a line.")
@click.option("--until", callback=_duration, metavar="DURATION", help=f"How long to run after the last event ({DURATION_HELP}); default: until no timer is left (at most 365d).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per effect instead of timelines.")
def simulate(path: Path, events_path: Path, until: Any, as_json: bool) -> None:
    """Run the journeys in PATH (a file or directory) against recorded events, in memory.

    The clock jumps to each event's timestamp and fires the timers due on the way; nothing
    is sent. Prints each customer's timeline, or with --json one object per effect.
    """
    for given in (path, events_path):
        if not given.exists():
            click.echo(f"Error: no such file or directory: {given}", err=True)
            sys.exit(RET_NOT_FOUND)
    files = journey_files([path])
    if not files:
        click.echo(f"Error: no journey files (*.yaml, *.yml) in {path}", err=True)
        sys.exit(RET_NOT_FOUND)
    result = load_journeys(files)
    if result.errors:
        for error in result.errors:
            click.echo(f"Error: {error}", err=True)
        sys.exit(RET_INVALID)
    try:
        events = read_events(events_path)
        simulator = Simulator(result.journeys.values())
        simulator.run(events, until=until)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        for effect in simulator.effects:
            click.echo(json.dumps(effect.to_dict(), sort_keys=False, default=str))
        return
    click.echo(timelines(simulator, until is None))


def timelines(simulator: Simulator, open_ended: bool = False) -> str:
    """Each customer's timeline (times in UTC), then a summary line."""
    lines: list[str] = []
    for customer in simulator.iter_customers():
        bits = [f"stage {customer.stage or '-'}", f"{customer.points} points"]
        if customer.referral_codes:
            bits.append("codes " + ", ".join(customer.referral_codes.values()))
        lines.append(f"{customer.id} ({', '.join(bits)})")
        for at, journey, step, text in _entries(simulator, customer.id):
            lines.append(f"  {at:%Y-%m-%d %H:%M}  {journey:<20} {step:<16} {text}".rstrip())
        lines.append("")
    lines.append(summary(simulator))
    if open_ended:
        lines.append(f"(ran until no timer was left, at most {DEFAULT_HORIZON.days}d after the last event; times in UTC)")
    return "\n".join(lines)


def summary(simulator: Simulator) -> str:
    """One line: customers, enrollments by status, sends, render errors."""
    statuses = Counter(e.status for e in simulator.enrollments.values())
    sends = [e for e in simulator.effects if e.effect == "send"]
    failed = sum(1 for e in sends if "error" in e.detail)
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    text = f"{len(simulator.customers)} customers, {len(simulator.enrollments)} enrollments ({by_status or 'none'}), {len(sends)} send{'' if len(sends) == 1 else 's'}"
    return text + (f", {failed} failed to render" if failed else "")


def _entries(simulator: Simulator, customer_id: str) -> list[tuple[Any, str, str, str]]:
    """Events received and effects, interleaved in the order they happened."""
    effects = [(i, e) for i, e in enumerate(simulator.effects) if e.customer == customer_id]
    received = [(seq, at, event) for seq, at, who, event in simulator.received if who == customer_id]
    rows: list[tuple[Any, str, str, str]] = []
    r = 0
    for index, effect in effects:
        while r < len(received) and received[r][0] <= index:
            rows.append(_event_row(received[r][1], received[r][2]))
            r += 1
        rows.append((effect.at, effect.journey or "", effect.step or "", describe(effect)))
    rows.extend(_event_row(at, event) for _, at, event in received[r:])
    return rows


def _event_row(at: Any, event: dict[str, Any]) -> tuple[Any, str, str, str]:
    name = event.get("event") if event.get("type", "track") == "track" else event.get("type")
    props = event.get("properties") or event.get("traits") or {}
    shown = ", ".join(f"{k}={v}" for k, v in list(props.items())[:3])
    return (at, "", "", f"<- {name}" + (f" ({shown})" if shown else ""))


def describe(effect: Effect) -> str:
    """A short line for people: what happened, with the message's subject or text."""
    d = effect.detail
    if effect.effect == "send":
        if d.get("audience"):
            where = "from" if d.get("action") == "remove" else "to"
            return f"send {d.get('channel')} ({d.get('kind')}): {d.get('action')} {where} audience {d['audience']}"
        what = f"send {d.get('channel')} {d.get('template') or 'inline'} ({d.get('kind')})"
        if "error" in d:
            return f"{what}: NOT RENDERED: {d['error']}"
        content = d.get("content") or {}
        headline = content.get("subject") or content.get("title") or content.get("text") or content.get("body") or ""
        headline = " ".join(str(headline).split())
        return f"{what}: {headline[:70] + ('...' if len(headline) > 70 else '')!r}" if headline else what
    if effect.effect == "enter":
        return f"enter (on {d.get('trigger')})"
    if effect.effect == "not_entered":
        return f"not entered: {d.get('reason')}"
    if effect.effect == "stage":
        return f"stage {d.get('from') or '-'} -> {d.get('to')}"
    if effect.effect == "profile":
        return "traits " + ", ".join(f"{k}={v}" for k, v in (d.get("traits") or {}).items())
    if effect.effect == "points":
        if d.get("skipped"):
            return f"no referrer points: {d['skipped']}"
        to = "" if d.get("to") == "customer" else f" to referrer {d.get('customer_credited')}"
        return f"+{d.get('amount')} points{to} ({d.get('reason') or 'no reason'}), balance {d.get('balance')}"
    if effect.effect == "referral":
        return f"referral code {d.get('code')} ({d.get('program')})"
    if effect.effect == "exit":
        reason = d.get("reason")
        return f"{d.get('status')}" + (f": {reason}" if reason and reason != d.get("status") else "")
    return effect.effect


COMMANDS = [simulate]
