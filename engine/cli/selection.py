"""What the operator commands share: ids or a filter, time windows, tables, and the report of an action.

``journey deliveries`` and ``journey events`` take the rows to act on as IDs, as filter
options, or ``--all``; one of them is required, so that a bare ``retry`` never acts on
everything by accident.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import BaseModel

from engine.cli.common import run
from engine.durations import parse_duration
from engine.preferences import MAX_LIMIT
from engine.segment import parse_time

if TYPE_CHECKING:
    from engine.services import Services

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Moment(click.ParamType):
    """A time: ISO 8601 (``2026-12-01T09:00``, UTC unless it says otherwise), or a duration ago (``2h``, ``3d``)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime | timedelta:
        if isinstance(value, (datetime, timedelta)):
            return value
        text = str(value).strip()
        try:
            return parse_duration(text)
        except ValueError:
            pass
        try:
            return parse_time(text)  # the API's one reading of a time; without a zone, UTC
        except ValueError:
            self.fail(f"{value!r} is neither a time (2026-12-01T09:00:00Z) nor a duration ago (2h, 3d)", param, ctx)


def at(moment: datetime | timedelta | None, now: datetime) -> datetime | None:
    """A :class:`Moment` as a time, a duration counted back from ``now``."""
    return now - moment if isinstance(moment, timedelta) else moment


def window_options(what: str) -> Callable[[F], F]:
    """``--since`` and ``--until``, on the time ``what`` (e.g. "created")."""

    def decorate(command: F) -> F:
        command = click.option("--until", type=Moment(), help=f"Only those {what} before TIME.")(command)
        return click.option("--since", type=Moment(),
                            help=f"Only those {what} at or after TIME (ISO 8601, UTC unless given; or 2h, 3d ago).",
                            )(command)

    return decorate


def require_selection(ids: Sequence[int], every: bool, filters: dict[str, Any], noun: str, listing: str) -> None:
    """Refuse a command line that names no rows, or both ids and a filter."""
    given = {k: v for k, v in filters.items() if v is not None}
    if ids and (every or given):
        raise click.UsageError(f"give {noun} IDs, or filter options / --all, not both")
    if not ids and not every and not given:
        raise click.UsageError(f"give the IDs of the {noun} (see `{listing}`), filter options, or --all")


def echo_json(value: Any) -> None:
    """Print models (or lists of them) as indented JSON, with the API's field names."""
    def plain(item: Any) -> Any:
        return item.model_dump(mode="json", by_alias=True) if isinstance(item, BaseModel) else item

    click.echo(json.dumps([plain(v) for v in value] if isinstance(value, list) else plain(value), indent=2))


def table(rows: Sequence[BaseModel], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table of ``rows`` (their fields by API name) under ``columns`` (title, field)."""
    cells = [[_cell(row.model_dump(mode="json", by_alias=True).get(key), key) for _, key in columns] for row in rows]
    widths = [max(len(title), *(len(row[i]) for row in cells)) for i, (title, _) in enumerate(columns)]
    lines = ["  ".join(title.ljust(width) for (title, _), width in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if key.endswith("At") or key in ("at", "timestamp"):
        return str(value)[:19].replace("T", " ")
    return str(value)


def plural(count: int, singular: str, many: str) -> str:
    """``1 delivery``, ``3 deliveries``."""
    return f"{count} {singular if count == 1 else many}"


def report(done: str, result: Any, rows: Sequence[Any] | None, singular: str, many: str, as_json: bool) -> None:
    """Print what an action did: the count, the ids when given by ids, the audit entry, and an enqueue warning."""
    if as_json:
        echo_json(result)
    else:
        ids = f": {', '.join(str(r.id) for r in rows)}" if rows else ""
        click.echo(f"{done} {plural(result.acted, singular, many)}{ids}")
    if result.enqueued is False:
        click.echo("the broker could not take them now; they are pending and the scheduler enqueues them", err=True)


__all__ = ["Moment", "at", "echo_json", "plural", "report", "require_selection", "table", "window_options"]


def first_entries(page: Callable[[int, int | None], tuple[list[T], str | None]], limit: int) -> tuple[list[T], bool]:
    """The first ``limit`` entries of a paged listing, and whether it has more.

    ``page(size, after)`` returns at most ``size`` entries after the id ``after`` and the
    next page's cursor (None: the last page).
    """
    found: list[T] = []
    after: int | None = None
    while len(found) <= limit:
        entries, cursor = page(min(MAX_LIMIT, limit - len(found) + 1), after)
        found += entries
        if cursor is None:
            break
        after = int(cursor)
    return found[:limit], len(found) > limit


def print_listing(entries: Sequence[BaseModel], more: bool, limit: int, columns: Sequence[tuple[str, str]],
                  none: str, filtered: bool, as_json: bool) -> None:
    """Print a listing's entries as JSON or a table; ``none`` when there are none (``filtered``: "... match")."""
    if as_json:
        echo_json(entries)
    elif not entries:
        click.echo(none + (" match" if filtered else ""))
    else:
        click.echo(table(entries, columns))
    if more:
        click.echo(f"(the first {limit} shown; narrow the filter or pass --limit)", err=True)


def action_command(group: click.Group, name: str, done: str, summary: str, *,
                   filter_options: Callable[[Callable[..., Any]], Callable[..., Any]],
                   act: Callable[[Services, tuple[int, ...], dict[str, Any]], Any], rows: str, singular: str,
                   many: str, listing: str, every_help: str) -> click.Command:
    """``journey GROUP NAME [ID]... [FILTER...] [--all] [--json]``: an operator action by ids or by filter.

    ``act(services, ids, options)`` builds the selection and carries it out (returning the
    result model); ``rows`` is the result's field of the rows acted on by ids.
    """

    @click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
    @filter_options
    @click.option("--all", "every", is_flag=True, help=every_help)
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def command(ids: tuple[int, ...], every: bool, as_json: bool, **options: Any) -> None:
        require_selection(ids, every, options, many, listing)
        local: list[bool] = []

        def carry_out(services: Services) -> Any:
            local.append(not services.settings.queue_url)
            return act(services, tuple(dict.fromkeys(ids)), options)

        result = run(carry_out)
        report(done, result, getattr(result, rows), singular, many, as_json)
        if result.enqueued and result.acted and local[0]:
            click.echo("(REDIS_URL is unset: this command's queue is its own; the scheduler's sweep sends them "
                       "within JOURNEY_SWEEP_AFTER)", err=True)

    command.__doc__ = summary
    return group.command(name)(command)
