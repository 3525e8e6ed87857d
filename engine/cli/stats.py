"""``journey stats`` and ``journey funnel``: what journeys achieve, as tables or the API's JSON."""

from __future__ import annotations

from typing import Any

import click
import orjson

from engine.analytics import journey_stats_now, stage_funnel_now
from engine.cli.common import run
from engine.durations import format_duration

_since = click.option("--since", default="30d", show_default=True,
                      help="Start of the window: a duration back from now (30d) or an ISO time.")
_until = click.option("--until", default=None, help="End of the window (default: now): a duration back or an ISO time.")
_json = click.option("--json", "as_json", is_flag=True, help="Print exactly what the API returns.")


@click.command("stats")
@click.argument("journey")
@_since
@_until
@click.option("--version", type=int, default=None, help="Only this version (default: every version).")
@click.option("--min-sample", type=int, default=None, help="Customers per variant before a verdict (default 100).")
@_json
def stats(journey: str, since: str, until: str | None, version: int | None,
          min_sample: int | None, as_json: bool) -> None:
    """Show JOURNEY's funnel per step, its edges, and its experiments for customers who entered in the window."""
    params = {"since": since, "until": until, "version": None if version is None else str(version),
              "min_sample": None if min_sample is None else str(min_sample)}
    result = run(lambda services: journey_stats_now(services, journey, params))
    click.echo(orjson.dumps(result).decode() if as_json else format_stats(result))


@click.command("funnel")
@_since
@_until
@_json
def funnel(since: str, until: str | None, as_json: bool) -> None:
    """Show the stage funnel: customers per stage now, moves in the window, time in stage, drop-off."""
    result = run(lambda services: stage_funnel_now(services, {"since": since, "until": until}))
    click.echo(orjson.dumps(result).decode() if as_json else format_funnel(result))


def format_stats(stats: dict[str, Any]) -> str:
    """The stats as tables for people."""
    version = f" v{stats['version']}" if stats["version"] is not None else " (every version)"
    lines = [
        f"{stats['journey']}{version}: entered {stats['since'][:16]} .. {stats['until'][:16]} UTC",
        f"  {stats['entered']} enrollments, {stats['customers']} customers, {stats['converted']} converted"
        f" ({_pct(stats['rate'])})" + (f" within {_days(stats['conversion_window'])} of entering"
                                        if stats["conversion_window"] is not None else ""),
        "",
        f"{'STEP':<22} {'ENTERED':>8} {'WAITING':>8} {'MEDIAN WAIT':>11}  EXITED / DELIVERIES",
    ]
    for step in stats["steps"]:
        wait = step["wait"] or {}
        median = _ago(wait.get("median_seconds"))
        extra = ", ".join(f"{reason} {n}" for reason, n in sorted(step["exited"].items()))
        sends = ", ".join(
            f"{status} {n}" + (" (" + ", ".join(f"{r} {c}" for r, c in sorted(step["held"].items())) + ")"
                               if status == "held" and step["held"] else "")
            for status, n in sorted(step["deliveries"].items())
        )
        text = "; ".join(t for t in (f"exited: {extra}" if extra else "", f"sends: {sends}" if sends else "") if t)
        lines.append(f"{step['id']:<22} {step['entered']:>8} {step['waiting']:>8} {median:>11}  {text}")
    if stats["edges"]:
        lines += ["", f"{'FROM':<22} {'PATH':<30} {'TO':<18} {'CUSTOMERS':>9} {'SHARE':>7}"]
        for edge in stats["edges"]:
            lines.append(f"{edge['step']:<22} {str(edge['path'])[:30]:<30} {str(edge['to'] or '(end)'):<18}"
                         f" {edge['customers']:>9} {_pct(edge['share']):>7}")
    if stats["variants"]:
        lines += ["", f"{'SPLIT':<16} {'VARIANT':<12} {'CUSTOMERS':>9} {'CONV':>6} {'RATE':>7} {'LIFT':>8}"
                      f" {'95% CI':>17} {'P':>7} {'P(BEAT)':>7}  VERDICT"]
        for v in stats["variants"]:
            ci = f"[{v['ci95'][0] * 100:+.1f}, {v['ci95'][1] * 100:+.1f}]" if v["ci95"] else "-"
            lift = f"{v['lift'] * 100:+.1f}pt" if v["lift"] is not None else "-"
            p = f"{v['p_value']:.3g}" if v["p_value"] is not None else "-"
            beat = _pct(v["p_beats_control"]) if v["p_beats_control"] is not None else "-"
            name = v["variant"] + (" (holdout)" if v["holdout"] else "")
            lines.append(f"{v['split']:<16} {name:<12} {v['customers']:>9} {v['converted']:>6} {_pct(v['rate']):>7}"
                         f" {lift:>8} {ci:>17} {p:>7} {beat:>7}  {v['verdict']}")
    if stats["not_entered"]:
        lines += ["", "not entered: " + ", ".join(f"{r} {n}" for r, n in sorted(stats["not_entered"].items()))]
    return "\n".join(lines)


def format_funnel(funnel: dict[str, Any]) -> str:
    """The stage funnel as a table for people."""
    lines = [
        f"stages: moves {funnel['since'][:16]} .. {funnel['until'][:16]} UTC",
        f"{'STAGE':<14} {'NOW':>8} {'ENTERED':>8} {'ADVANCED':>8} {'DROP-OFF':>8} {'MEDIAN TIME':>11}",
    ]
    for s in funnel["stages"]:
        lines.append(f"{s['stage']:<14} {s['customers']:>8} {s['entered']:>8} {s['advanced']:>8}"
                     f" {_pct(s['drop_off']):>8} {_ago(s['median_seconds_in_stage']):>11}")
    lines.append(f"{'(no stage)':<14} {funnel['no_stage']:>8}")
    if funnel["transitions"]:
        lines += ["", "moves: " + ", ".join(f"{t['from'] or '-'} -> {t['to']} {t['customers']}"
                                            for t in funnel["transitions"])]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f}%" if value is not None else "-"


def _td(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def _days(seconds: float) -> str:
    return f"{int(seconds // 86400)}d" if seconds % 86400 == 0 else format_duration(_td(seconds))


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return format_duration(_td(int(seconds))) if seconds >= 1 else "0s"


COMMANDS = [stats, funnel]
