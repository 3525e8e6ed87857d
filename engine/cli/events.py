"""``journey events``: the stored events that keep failing to apply; retry or drop them.

The same checks and records as the admin API (:mod:`engine.failed_events`): by IDs, all
or nothing (RET_NOT_FOUND for an id that names nothing, RET_INVALID for one applied,
dropped or never failed, each named with its reason); by filter options or ``--all``,
every failing or failed event selected, in batches. Each action is written to the audit
log (``journey audit``) as ``cli:<user>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from engine import failed_events as operations
from engine.actions import checked
from engine.audit import Actor
from engine.actions import Listing
from engine.cli.selection import action_command, first_entries, print_listing, at, window_options
from engine.cli.common import run
from engine.preferences import MAX_LIMIT
from engine.services import Services

COLUMNS = [("ID", "id"), ("STATUS", "status"), ("NAME", "name"), ("USER", "userId"), ("SOURCE", "source"),
           ("RECEIVED", "receivedAt"), ("ATTEMPTS", "attempts"), ("ERROR", "error")]


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filter: --status, --name, --source, --since, --until (received)."""
    command = window_options("received")(command)
    for option in reversed([
        click.option("--status", type=click.Choice(operations.STATUSES),
                     help="failing (still retried), failed (given up) or dropped; default: failing and failed."),
        click.option("--name", help="Only this event (a track's event, a page's name, else the type)."),
        click.option("--source", help="Only those sent with this key name."),
    ]):
        command = option(command)
    return command


def _filter(services: Services, options: dict[str, Any]) -> operations.EventFilter:
    now = services.clock()
    values = {**options, "since": at(options.get("since"), now), "until": at(options.get("until"), now)}
    return checked(operations.EventFilter, {k: v for k, v in values.items() if v is not None})


@click.group("events")
def events() -> None:
    """The stored events that keep failing to apply: list, retry or drop them."""


@events.command("failed")
@filter_options
@click.option("--limit", type=click.IntRange(min=1), default=MAX_LIMIT, show_default=True,
              help="Show at most this many (oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
def failed(limit: int, as_json: bool, **options: Any) -> None:
    """List the events that failed to apply, oldest first, with their last error and attempts.

    `failing`: the workers still retry it; `failed`: given up after the last attempt
    (the sweeper leaves it, timers stop waiting for it). Fix the cause, then `journey
    events retry`, or `journey events drop` what should never apply.
    """

    def read(services: Services) -> tuple[list[operations.FailedEventView], bool]:
        wanted = _filter(services, options)
        with services.sessions() as session:
            return first_entries(lambda size, after: operations.list_failed(session, Listing(wanted, size, after)), limit)

    entries, more = run(read)
    print_listing(entries, more, limit, COLUMNS, "no failed events", any(v is not None for v in options.values()), as_json)


def _act(name: str) -> Callable[[Services, tuple[int, ...], dict[str, Any]], operations.EventActionResult]:
    def act(services: Services, ids: tuple[int, ...], options: dict[str, Any]) -> operations.EventActionResult:
        selection = (operations.EventAction(ids=list(ids)) if ids
                     else operations.EventAction(filter=_filter(services, options)))
        return operations.act(services, name, selection, Actor.command_line())
    return act


def _action(name: str, done: str, summary: str) -> click.Command:
    return action_command(events, name, done, summary, filter_options=filter_options, act=_act(name),
                          rows="events", singular="event", many="events", listing="journey events failed",
                          every_help="Every failing and failed event.")


_action("retry", "retried", """Apply failing or failed events again: enqueued, attempts from 0.

    By IDs, or every failing or failed event the filter selects, or `--all`. Written to
    the audit log.
    """)
_action("drop", "dropped", """Give up failing or failed events: never applied; the rows stay.

    Who dropped them and when are kept (`droppedBy`, `droppedAt`); written to the audit log.
    """)

COMMANDS = [events]
