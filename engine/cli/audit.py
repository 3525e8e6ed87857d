"""``journey audit``: the operator actions taken, newest first."""

from __future__ import annotations

import click

from engine import audit as audit_log
from engine.cli.common import in_transaction
from engine.cli.selection import echo_json, table
from engine.preferences import DEFAULT_LIMIT, MAX_LIMIT

COLUMNS = [("ID", "id"), ("AT", "at"), ("ACTOR", "actor"), ("ACTION", "action"), ("ACTED", "acted"),
           ("SELECTION", "selection"), ("FINISHED", "finishedAt")]


@click.command("audit")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=DEFAULT_LIMIT, show_default=True,
              help="Show this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def audit(limit: int, as_json: bool) -> None:
    """The operator actions taken (retry, drop, resend, mark sent...): who (an API key by id,
    prefix and name, or cli:<user>), when, what, on which ids or filter, and how many rows."""
    page = in_transaction(lambda session: audit_log.list_entries(session, limit))
    if as_json:
        echo_json(page.entries)
    elif not page.entries:
        click.echo("no actions yet")
    else:
        click.echo(table(page.entries, COLUMNS))


COMMANDS = [audit]
