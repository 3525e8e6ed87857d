"""``journey deliveries``: see deliveries and resolve the ``unknown`` ones.

A delivery is ``unknown`` when a worker stopped in the middle of its send. The same
checks and records as the admin API (:mod:`engine.deliveries`): a bad id is ``Error:
...`` naming it, with exit code RET_NOT_FOUND (no such delivery) or RET_INVALID (not
unknown). The group is the home of every delivery command (listing by status,
retrying and dropping dead ones belong here too).
"""

from __future__ import annotations

import getpass
import json
from typing import Any

import click
from sqlalchemy.orm import Session

from engine import deliveries as operations
from engine.cli.common import all_pages, in_transaction, run
from engine.preferences import MAX_LIMIT


def _by() -> str:
    """Who acts, for the trace: the command line and the operating-system user."""
    try:
        return f"command line ({getpass.getuser()})"
    except (KeyError, OSError):  # no user name in this environment (a bare container)
        return "command line"


def _selection(ids: tuple[int, ...], every: bool | None) -> operations.Selection:
    """The deliveries named; ``every`` is None for a command without ``--all``."""
    if every and ids:
        raise click.UsageError("give delivery IDs or --all, not both")
    if not every and not ids:
        raise click.UsageError("give the IDs of the deliveries (see `journey deliveries unknown`)"
                               + (" or --all" if every is not None else ""))
    return operations.Selection(ids=tuple(dict.fromkeys(ids)), every=bool(every))


@click.group("deliveries")
def deliveries() -> None:
    """See deliveries and resolve the unknown ones (a worker stopped while sending them)."""


@deliveries.command("unknown")
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
def unknown(as_json: bool) -> None:
    """List the deliveries whose send may or may not have happened, oldest first
    (WHEN: when the send began, to compare with the provider's logs).

    Resolve each with `journey deliveries resend` (a second copy may arrive) or
    `journey deliveries mark-sent` (the provider had it). Webhooks and audiences are
    resent automatically: their providers deduplicate on the key.
    """

    def read(session: Session) -> list[dict[str, Any]]:
        return all_pages(lambda cursor: operations.list_deliveries(session, operations.read_listing(
            {"status": "unknown", "limit": MAX_LIMIT, **({"cursor": cursor} if cursor else {})})))

    entries = in_transaction(read)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    elif not entries:
        click.echo("no unknown deliveries")
    else:
        click.echo(format_deliveries(entries))


@deliveries.command("resend")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="ID...")
@click.option("--all", "every", is_flag=True, help="Every unknown delivery.")
def resend(ids: tuple[int, ...], every: bool) -> None:
    """Send unknown deliveries again: pending, and enqueued on their channel's queue.

    The customer may get a second copy if the first one did go out. Recorded in each
    delivery's trace.
    """
    selection = _selection(ids, every)
    resent, enqueued = run(lambda services: operations.resend_now(services, selection, _by()))
    click.echo(f"resent {len(resent)} deliver{'y' if len(resent) == 1 else 'ies'}"
               + (": " + ", ".join(str(d["id"]) for d in resent) if resent else ""))
    if not enqueued:
        click.echo("the broker could not take them now; they are pending and the scheduler enqueues them", err=True)


@deliveries.command("mark-sent")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="ID...")
def mark_sent(ids: tuple[int, ...]) -> None:
    """Record unknown deliveries as sent (the provider had them). Recorded in each delivery's trace."""
    selection = _selection(ids, None)  # no --all: each one is a decision
    marked = run(lambda services: operations.mark_sent_now(services, selection, _by()))
    click.echo(f"marked {len(marked)} deliver{'y' if len(marked) == 1 else 'ies'} sent: "
               + ", ".join(str(d["id"]) for d in marked))


def format_deliveries(entries: list[dict[str, Any]]) -> str:
    """A table of deliveries."""
    columns = [("ID", "id"), ("CUSTOMER", "customer"), ("JOURNEY", "journey"), ("STEP", "step"),
               ("CHANNEL", "channel"), ("WHEN", "updatedAt"), ("ATTEMPTS", "attempts"), ("ERROR", "error")]
    cells = [[_cell(e[key], key) for _, key in columns] for e in entries]
    widths = [max(len(title), *(len(row[i]) for row in cells)) for i, (title, _) in enumerate(columns)]
    lines = ["  ".join(title.ljust(width) for (title, _), width in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any, key: str) -> str:
    if value is None:
        return ""
    if key == "updatedAt":
        return str(value)[:19].replace("T", " ")
    return str(value)


COMMANDS = [deliveries]
