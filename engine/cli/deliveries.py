"""``journey deliveries``: list deliveries, and retry, drop, resend or mark them sent.

The same checks and records as the admin API (:mod:`engine.deliveries`): by IDs, all
or nothing (an id that names nothing exits with RET_NOT_FOUND, one the action does not
apply to with RET_INVALID, each named with its reason); by filter options or ``--all``,
every delivery selected that the action applies to, in batches. Each action is written
to the delivery's trace and to the audit log (``journey audit``) as ``cli:<user>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from engine import deliveries as operations
from engine.actions import checked
from engine.audit import Actor
from engine.cli.common import run
from engine.actions import Listing
from engine.cli.selection import action_command, first_entries, print_listing, at, table, window_options
from engine.preferences import MAX_LIMIT
from engine.services import Services

COLUMNS = [("ID", "id"), ("STATUS", "status"), ("CUSTOMER", "customer"), ("JOURNEY", "journey"), ("STEP", "step"),
           ("CHANNEL", "channel"), ("WHEN", "updatedAt"), ("ATTEMPTS", "attempts"), ("ERROR / REASON", "error")]


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filter: --status, --channel, --journey, --reason, --since, --until (created)."""
    command = window_options("created")(command)
    for option in reversed([
        click.option("--status", type=click.Choice(operations.STATUSES), help="Only this status."),
        click.option("--channel", help="Only this channel (email, sms...)."),
        click.option("--journey", help="Only this journey's deliveries."),
        click.option("--reason", help="Only those whose error or held reason contains TEXT (any case).",
                     metavar="TEXT"),
    ]):
        command = option(command)
    return command


def _filter(services: Services, options: dict[str, Any]) -> operations.DeliveryFilter:
    now = services.clock()
    values = {**options, "since": at(options.get("since"), now), "until": at(options.get("until"), now)}
    return checked(operations.DeliveryFilter, {k: v for k, v in values.items() if v is not None})


@click.group("deliveries")
def deliveries() -> None:
    """List deliveries by status, channel, journey and time; retry, drop, resend or mark them sent."""


@deliveries.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(min=1), default=MAX_LIMIT, show_default=True,
              help="Show at most this many (oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
def list_command(limit: int, as_json: bool, **options: Any) -> None:
    """List deliveries, oldest first: `--status dead` (retries exhausted), `unknown` (a worker
    stopped while sending), `failed`, `held` (with the policy's reason), `pending`...

    WHEN is when the delivery last changed (for an unknown one: when its send began, to
    compare with the provider's logs).
    """

    def read(services: Services) -> tuple[list[operations.DeliveryView], bool]:
        wanted = _filter(services, options)
        with services.sessions() as session:
            return first_entries(lambda size, after: operations.list_deliveries(session, Listing(wanted, size, after)), limit)

    entries, more = run(read)
    print_listing(entries, more, limit, COLUMNS, "no deliveries", any(v is not None for v in options.values()), as_json)


@deliveries.command("unknown")
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
@click.pass_context
def unknown(ctx: click.Context, as_json: bool) -> None:
    """List the deliveries whose send may or may not have happened (`list --status unknown`).

    Resolve each with `journey deliveries resend` (a second copy may arrive),
    `mark-sent` (the provider had it) or `drop`. Webhooks and audiences are resent
    automatically: their providers deduplicate on the key.
    """
    ctx.invoke(list_command, status="unknown", as_json=as_json, limit=MAX_LIMIT)


def _act(name: str) -> Callable[[Services, tuple[int, ...], dict[str, Any]], operations.DeliveryActionResult]:
    def act(services: Services, ids: tuple[int, ...], options: dict[str, Any]) -> operations.DeliveryActionResult:
        selection = (operations.DeliveryAction(ids=list(ids)) if ids
                     else operations.DeliveryAction(filter=_filter(services, options)))
        return operations.act(services, name, selection, Actor.command_line())
    return act


def _action(name: str, done: str, summary: str) -> click.Command:
    return action_command(deliveries, name, done, summary, filter_options=filter_options, act=_act(name),
                          rows="deliveries", singular="delivery", many="deliveries", listing="journey deliveries list",
                          every_help="Every delivery the action applies to.")


_action("retry", "retried", """Send dead or failed deliveries again: pending, enqueued, attempts from 0.

    By IDs, or every dead or failed delivery the filter selects (`--status dead`,
    `--channel email`, `--since 2h`...) or `--all`. Each retry is in the delivery's trace
    (with the attempts it had) and in the audit log.
    """)
_action("drop", "dropped", """Give up dead, failed, unknown or pending deliveries: `dropped`, never sent.

    The rows stay, with who dropped them and when (`droppedBy`, `droppedAt`); recorded
    in the trace and the audit log.
    """)
_action("resend", "resent", """Send unknown deliveries again: pending, and enqueued on their channel's queue.

    The customer may get a second copy if the first one did go out. Recorded in each
    delivery's trace and in the audit log.
    """)
_action("mark-sent", "marked sent", """Record unknown deliveries as sent (the provider had them).

    Recorded in each delivery's trace and in the audit log.
    """)


def format_deliveries(entries: list[operations.DeliveryView]) -> str:
    """A table of deliveries."""
    return table(entries, COLUMNS)


__all__ = ["deliveries", "format_deliveries"]

COMMANDS = [deliveries]
