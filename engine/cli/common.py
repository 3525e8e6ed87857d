"""What the command families share: reading settings and failing with a clear line."""

from __future__ import annotations

import logging
from datetime import datetime
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, TypeVar

import click
from sqlalchemy.orm import Session

from engine.cli.codes import RET_CONFIG, RET_INVALID, RET_NOT_FOUND, RET_SERVICE
from channels import registry
from engine.environment import read_settings
from engine.errors import ConfigError, NotFoundError, PayloadError, StorageError
from engine.ratelimit import check_channels
from engine.services import Services
from engine.settings import Settings
from engine.storage.db import check_current
from engine.workers.broker import quiet_pika

T = TypeVar("T")


def fail(message: str, code: int) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


def a_directory(ctx: click.Context, param: click.Parameter, value: T) -> T:
    """A click callback: a file given where a directory belongs is a usage error that says what to give."""
    if value is not None and Path(str(value)).is_file():
        option = param.opts[0] if param.opts else param.name
        raise click.BadParameter(f"{value} is a file; give the directory that holds it, such as {option} {Path(str(value)).parent}")
    return value


def load_settings() -> Settings:
    """Read the settings from the environment, or exit with RET_CONFIG naming the bad variable."""
    try:
        settings = read_settings()
        check_channels(settings.rate_limits, registry.available())
        check_channels(settings.max_attempts, registry.available(), "CHANNEL_MAX_ATTEMPTS")
    except ConfigError as exc:
        fail(str(exc), RET_CONFIG)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    quiet_pika(settings.log_level)
    return settings


@contextmanager
def services_for(*, process: str | None = None, preview_unconfigured: bool = False) -> Iterator[Services]:
    """Yield the services built from the environment (:meth:`Services.from_env`).

    A malformed setting exits with RET_CONFIG, a storage failure with RET_SERVICE.
    """
    load_settings()  # logging first, and a clear exit for a malformed engine setting
    try:
        services = Services.from_env(process=process, preview_unconfigured=preview_unconfigured)
    except ConfigError as exc:
        fail(str(exc), RET_CONFIG)
    try:
        yield services
    except StorageError as exc:
        fail(str(exc), RET_SERVICE)
    finally:
        services.close()


def run(work: Callable[[Services], T]) -> T:
    """``work(services)`` on the configured, migrated database, failing with a clear line.

    A bad argument (PayloadError) exits with RET_INVALID, an unknown one (NotFoundError)
    with RET_NOT_FOUND.
    """
    with services_for() as services:
        check_current(services.engine)
        try:
            return work(services)
        except PayloadError as exc:
            fail(str(exc), RET_INVALID)
        except NotFoundError as exc:
            fail(str(exc), RET_NOT_FOUND)


def in_transaction(work: Callable[[Session], T]) -> T:
    """``work(session)`` in one transaction on the configured database (see :func:`run`)."""

    def transaction(services: Services) -> T:
        with services.sessions.begin() as session:
            return work(session)

    return run(transaction)


def in_transaction_now(work: Callable[[Session, datetime], T]) -> T:
    """``work(session, now)`` in one transaction, ``now`` read from the services' clock."""

    def transaction(services: Services) -> T:
        with services.sessions.begin() as session:
            return work(session, services.clock())

    return run(transaction)


def all_pages(page: Callable[[str | None], tuple[list[T], str | None]]) -> list[T]:
    """Every entry of a paged listing: ``page(cursor)`` returns a page and the next cursor (None: the last)."""
    entries: list[T] = []
    cursor: str | None = None
    while True:
        found, cursor = page(cursor)
        entries += found
        if cursor is None:
            return entries
