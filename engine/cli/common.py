"""What the command families share: reading settings and failing with a clear line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from engine.cli.codes import RET_CONFIG, RET_SERVICE
from channels import registry
from engine.errors import ConfigError, StorageError
from engine.ratelimit import check_channels
from engine.services import Services
from engine.settings import Settings


def fail(message: str, code: int) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


def load_settings() -> Settings:
    """Read the settings from the environment, or exit with RET_CONFIG naming the bad variable."""
    try:
        settings = Settings.from_env()
        check_channels(settings.rate_limits, registry.available())
        check_channels(settings.max_attempts, registry.available(), "CHANNEL_MAX_ATTEMPTS")
    except ConfigError as exc:
        fail(str(exc), RET_CONFIG)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
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
