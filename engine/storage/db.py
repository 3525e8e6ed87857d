"""Connections to the database and the migrations that shape it."""

from __future__ import annotations

import importlib.resources
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from engine.errors import StorageError
from engine.storage import bulk


def make_engine(database_url: str, *, pool_size: int = 10, connection: sqlite3.Connection | None = None) -> Engine:
    """Create a SQLAlchemy engine for ``database_url`` with the engine's connection settings.

    On SQLite the database runs in WAL mode with a busy timeout, so the API, the
    worker and the scheduler of ``journey dev`` can share one file. ``connection``: use
    that one SQLite connection for everything (the twin's in-memory database).
    """
    if database_url.startswith("sqlite"):
        if connection is not None:
            engine = create_engine(database_url, creator=lambda: connection, poolclass=StaticPool,
                                   json_serializer=_json_dumps, json_deserializer=_json_loads)
        else:
            engine = create_engine(database_url, connect_args={"timeout": 30}, json_serializer=_json_dumps,
                                   json_deserializer=_json_loads)
        event.listen(engine, "connect", sqlite_pragmas)
        # Take the write lock when a transaction begins: a read that later turns into a
        # write cannot wait for the lock in SQLite and would fail with "database is locked".
        event.listen(engine, "begin", begin_immediate)
        return engine
    return create_engine(
        database_url,
        json_serializer=_json_dumps,
        # Read JSON as the API parsed it: a number beyond 64 bits is a float, which
        # orjson can write again (an int that large it cannot).
        json_deserializer=_json_loads,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per request. A connection broken by a
        # database restart fails one transaction, which the API answers with a 503 that
        # SDKs retry, and the pool replaces the connection.
    )


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _json_loads(value: object) -> object:
    # SQLite hands a JSON number stored in a column of NUMERIC affinity back as a number.
    return orjson.loads(value) if isinstance(value, (str, bytes, bytearray, memoryview)) else value


def begin_immediate(connection: Connection) -> None:
    """Begin SQLite transactions with the write lock (an engine's ``begin`` listener)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """Set up a new SQLite connection: BEGIN issued by the engine, WAL, foreign keys, a busy timeout."""
    dbapi_connection.isolation_level = None  # let the "begin" listener issue BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory used by every process (on PostgreSQL, flushing set-based: :mod:`engine.storage.bulk`)."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    if engine.dialect.name == "postgresql":
        bulk.install(sessions)
    return sessions


def _alembic_config(engine: Engine) -> Config:
    directory = Path(str(importlib.resources.files("migrations")))
    config = Config()
    config.set_main_option("script_location", str(directory))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (default: the newest).

    Raises:
        StorageError: the database cannot be reached.
    """
    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise StorageError(f"cannot migrate {engine.url!r}: {exc.orig}") from exc


def current_revision(engine: Engine) -> tuple[str | None, str]:
    """Return (the database's revision, the newest revision the code knows)."""
    script = ScriptDirectory.from_config(_alembic_config(engine))
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, script.get_current_head() or ""


def check_current(engine: Engine) -> None:
    """Fail with a clear message when the database is behind the code.

    Raises:
        StorageError: the database is unreachable or needs ``journey db upgrade``.
    """
    try:
        current, head = current_revision(engine)
    except OperationalError as exc:
        raise StorageError(f"cannot reach the database {engine.url!r}: {exc.orig}") from exc
    if current != head:
        raise StorageError(
            f"the database {engine.url!r} is at revision {current or 'none'} but the code "
            f"needs {head}; run `journey db upgrade`"
        )
