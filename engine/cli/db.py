"""``journey db``: apply and inspect the schema migrations."""

from __future__ import annotations

import click

from engine.cli.codes import RET_SERVICE
from engine.cli.common import fail, services_for
from engine.storage.db import current_revision, upgrade


@click.group("db")
def db() -> None:
    """Manage the database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Revision to migrate to.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations to DATABASE_URL."""
    with services_for() as services:
        upgrade(services.engine, revision)
        current, _ = current_revision(services.engine)
        click.echo(f"database {services.engine.url!r} is at revision {current}")


@db.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one the code knows."""
    with services_for() as services:
        try:
            current, head = current_revision(services.engine)
        except Exception as exc:  # noqa: BLE001
            fail(f"cannot reach the database: {exc}", RET_SERVICE)
        state = "up to date" if current == head else "behind: run `journey db upgrade`"
        click.echo(f"current: {current or 'none'}\nnewest:  {head}\n{state}")


COMMANDS = [db]
__all__ = ["COMMANDS"]
