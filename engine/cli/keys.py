"""``journey keys``: create, list and revoke API keys."""

from __future__ import annotations

import click

from engine import keys as api_keys
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.cli.common import fail, services_for
from engine.storage.db import check_current


@click.group("keys")
def keys() -> None:
    """Manage API keys (write keys send events; read keys look at the admin API; admin keys look and act)."""


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin key (read and act on the admin API) instead of a write key.")
@click.option("--read", is_flag=True, help="A read key: may read the admin API (every GET) but not act.")
def keys_create(name: str, admin: bool, read: bool) -> None:
    """Create a key named NAME and print it once.

    NAME is the source of the events sent with it: messageIds are deduplicated per
    source, so a rotated key keeps the same name.
    """
    if admin and read:
        raise click.UsageError("give --admin or --read, not both")
    scope = "admin" if admin else "read" if read else "write"
    with services_for() as services:
        check_current(services.engine)
        try:
            with services.sessions.begin() as session:
                _, secret = api_keys.create_key(session, name, scope=scope)
        except ValueError as exc:
            fail(str(exc), RET_INVALID)
    click.echo(secret)
    click.echo(
        f"Created {'an' if scope == 'admin' else 'a'} {scope} key for {name!r}. It is shown only now: store it safely.",
        err=True,
    )


@keys.command("list")
def keys_list() -> None:
    """List the keys: id, prefix, name, scope, created, revoked."""
    with services_for() as services:
        check_current(services.engine)
        with services.sessions() as session:
            rows = api_keys.list_keys(session)
    if not rows:
        click.echo("no keys; create one with `journey keys create NAME`")
        return
    click.echo(f"{'ID':>4}  {'PREFIX':<14} {'NAME':<20} {'SCOPE':<6} {'CREATED':<20} REVOKED")
    for row in rows:
        revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if row.revoked_at else "-"
        click.echo(
            f"{row.id:>4}  {row.prefix + '…':<14} {row.name:<20} {row.scope:<6} "
            f"{row.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {revoked}"
        )


@keys.command("revoke")
@click.argument("ident")
def keys_revoke(ident: str) -> None:
    """Revoke the key with id or prefix IDENT (or every active key named IDENT)."""
    with services_for() as services:
        check_current(services.engine)
        with services.sessions.begin() as session:
            count = api_keys.revoke_key(session, ident)
    if count == 0:
        fail(f"no active key has the id, prefix or name {ident!r}; see `journey keys list`", RET_NOT_FOUND)
    click.echo(f"revoked {count} key{'s' if count != 1 else ''}")


COMMANDS = [keys]
