"""``journey suppress`` and ``journey consent``: the suppression list and customers' consents.

The same checks and records as the admin API (:mod:`engine.preferences`): a bad argument
is ``Error: ...`` naming it with exit code RET_INVALID, an unknown customer or entry
RET_NOT_FOUND.
"""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy.orm import Session

from engine import preferences
from engine.cli.common import all_pages, in_transaction, in_transaction_now
from engine.policy import REASONS


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _who(entry: dict[str, Any]) -> str:
    return entry["address"] if entry["address"] is not None else f"customer {entry['userId']!r}"


@click.group("suppress")
def suppress() -> None:
    """Manage the suppression list: addresses, or customers, a channel never sends to."""


@suppress.command("add")
@click.argument("channel")
@click.argument("address", required=False)
@click.option("--user", "user_id", metavar="ID", help="Suppress the customer with this user id or anonymous id, "
                                                     "whatever their address, instead of an ADDRESS.")
@click.option("--reason", type=click.Choice(REASONS), default="manual", show_default=True, help="Why.")
@click.option("--note", help="A note for the record (a ticket, a provider's words).")
def suppress_add(channel: str, address: str | None, user_id: str | None, reason: str, note: str | None) -> None:
    """Put ADDRESS on CHANNEL's suppression list (CHANNEL `*`: every channel).

    Every send to it is held, transactional ones too. Adding an address that is on the
    list already leaves its entry as it is.
    """
    body = _given(channel=channel, address=address, userId=user_id, reason=reason, note=note)
    entry, created = in_transaction_now(
        lambda session, now: preferences.add_suppression(session, preferences.read_suppression(body), now))
    if created:
        click.echo(f"suppressed {_who(entry)} on {entry['channel']} ({entry['reason']})")
    else:
        click.echo(f"already suppressed: {_who(entry)} on {entry['channel']} ({entry['reason']} since {entry['at']})")


@suppress.command("list")
@click.option("--channel", help="Only this channel's entries (`*`: the entries for every channel).")
@click.option("--address", help="Only this address's entries.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def suppress_list(channel: str | None, address: str | None, as_json: bool) -> None:
    """List the suppression list, newest first."""

    def read(session: Session) -> list[dict[str, Any]]:
        return all_pages(lambda cursor: preferences.list_suppressions(session, preferences.read_listing(
            _given(channel=channel, address=address, cursor=cursor, limit=preferences.MAX_LIMIT))))

    entries = in_transaction(read)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    elif not entries:
        click.echo("no entries" + (" match" if channel or address else "; the suppression list is empty"))
    else:
        click.echo(format_suppressions(entries))


@suppress.command("remove")
@click.argument("channel")
@click.argument("address", required=False)
@click.option("--user", "user_id", metavar="ID", help="Lift the entry of the customer with this user id or "
                                                     "anonymous id instead of an ADDRESS.")
def suppress_remove(channel: str, address: str | None, user_id: str | None) -> None:
    """Take ADDRESS off CHANNEL's suppression list: sends to it go out again."""
    entry = in_transaction(lambda session: preferences.lift_suppression(session, channel, address=address, user_id=user_id))
    click.echo(f"lifted {_who(entry)} on {entry['channel']} (was {entry['reason']} since {entry['at']})")


@click.group("consent")
def consent() -> None:
    """Record and show customers' consent to marketing, by channel and topic."""


@consent.command("set")
@click.argument("customer")
@click.argument("channel")
@click.option("--topic", default="*", show_default=True, help="The topic; `*` covers every topic of the channel.")
@click.option("--subscribed/--unsubscribed", "subscribed", default=None, required=True,
              help="Subscribe or unsubscribe.")
@click.option("--source", default="command line", show_default=True, help="Where the choice came from.")
def consent_set(customer: str, channel: str, topic: str, subscribed: bool | None, source: str) -> None:
    """Record CUSTOMER's choice (a user id or anonymous id) for CHANNEL, as the unsubscribe
    link does; it applies to the next send."""
    if subscribed is None:
        raise click.UsageError("say --subscribed or --unsubscribed")
    body = {"channel": channel, "topic": topic, "subscribed": subscribed, "source": source}
    choice = in_transaction_now(
        lambda session, now: preferences.set_consent(session, customer, preferences.read_consent(body), now, source))
    what = "subscribed to" if choice["subscribed"] else "unsubscribed from"
    topics = "every topic" if choice["topic"] == "*" else f"topic {choice['topic']}"
    click.echo(f"{customer} {what} {choice['channel']}, {topics}")


@consent.command("show")
@click.argument("customer")
@click.option("--json", "as_json", is_flag=True, help="Print the choices as JSON.")
def consent_show(customer: str, as_json: bool) -> None:
    """Show CUSTOMER's recorded choices (a user id or anonymous id)."""
    shown = in_transaction(lambda session: preferences.consents_of(session, customer))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
    elif not shown["consents"]:
        click.echo(f"no choice recorded for {customer!r}: marketing is allowed on every channel")
    else:
        click.echo(format_consents(shown["consents"]))


def format_suppressions(entries: list[dict[str, Any]]) -> str:
    """A table of suppression entries."""
    width = max(len("ADDRESS / USER"), *(len(_who(e)) for e in entries))
    lines = [f"{'ID':>5}  {'CHANNEL':<11} {'ADDRESS / USER':<{width}}  {'REASON':<11} {'SINCE':<20} NOTE"]
    for e in entries:
        since = e["at"][:19].replace("T", " ")
        lines.append(f"{e['id']:>5}  {e['channel']:<11} {_who(e):<{width}}  {e['reason']:<11} {since:<20} "
                     f"{e['note'] or ''}".rstrip())
    return "\n".join(lines)


def format_consents(consents: list[dict[str, Any]]) -> str:
    """A table of consent choices."""
    width = max(len("TOPIC"), *(len(c["topic"]) for c in consents))
    lines = [f"{'CHANNEL':<11} {'TOPIC':<{width}}  {'CHOICE':<12} {'SINCE':<20} SOURCE"]
    for c in consents:
        choice = "subscribed" if c["subscribed"] else "unsubscribed"
        lines.append(f"{c['channel']:<11} {c['topic']:<{width}}  {choice:<12} {c['at'][:19].replace('T', ' '):<20} "
                     f"{c['source']}")
    return "\n".join(lines)


COMMANDS = [suppress, consent]
