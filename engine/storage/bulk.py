"""Set-based flushes on PostgreSQL: the rows the event path changes, one statement per table.

The ORM flushes each changed row with its own UPDATE (an executemany: one statement per
row on the server, each parsed, planned and run alone), and each new enrollment with its
own INSERT. Applying a batch of events changes every event (``processed_at``), most
customers (``last_seen_at``), and inserts or updates enrollments and timers: several
statements per event. :func:`install` hooks ``before_flush`` of a session factory on
PostgreSQL so that, for the models in :data:`UPDATED` and :data:`INSERTED`, a flush
writes them first, a statement per table and set of changed columns (the rows travel
as one JSON parameter, as :func:`engine.storage.upsert.insert_rows` does), then hands
them back to the ORM as clean. What is written, and when, is what the ORM would have
written then: the same rows, columns and values, at the same flushes.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, Table, TextClause, event, inspect, text
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker
from sqlalchemy.orm.attributes import get_history, set_committed_value

from engine.storage.models import Customer, Enrollment, Event, Timer
from engine.storage.upsert import recordset_json

#: Models whose changed rows are updated set-based (a single-column primary key each).
UPDATED: tuple[type, ...] = (Event, Customer, Enrollment, Timer)
#: Models whose new rows are inserted set-based (primary key given by the engine, not generated).
INSERTED: tuple[type, ...] = (Enrollment,)
#: Fewer rows than this of one kind are left to the ORM: one statement either way.
AT_LEAST = 2


def install(sessions: sessionmaker[Session]) -> None:
    """Flush :data:`UPDATED` and :data:`INSERTED` rows set-based in the sessions of ``sessions`` (PostgreSQL only)."""
    event.listen(sessions, "before_flush", _before_flush)


def _before_flush(session: Session, _flush_context: Any, _instances: Any) -> None:
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    _insert_new(session, connection.dialect)
    _update_dirty(session, connection.dialect)


def _insert_new(session: Session, dialect: Dialect) -> None:
    new: dict[type, list[Any]] = defaultdict(list)
    for instance in session.new:
        if type(instance) in INSERTED:
            new[type(instance)].append(instance)
    for model, instances in new.items():
        if len(instances) < AT_LEAST:
            continue
        table: Table = model.__table__  # type: ignore[attr-defined]
        rows = [_values(instance, table) for instance in instances]
        columns = tuple(table.c.keys())
        session.connection().execute(_insert(table, columns, dialect), {"rows": recordset_json(rows)})
        for instance, row in zip(instances, rows, strict=True):
            # Persistent and clean, as the ORM leaves a row it inserted.
            given = inspect(instance).dict
            session.expunge(instance)
            for key, value in row.items():
                if key not in given:  # a default: loaded, as the ORM sets it after its INSERT
                    set_committed_value(instance, key, value)
            make_transient_to_detached(instance)
            session.add(instance)


def _update_dirty(session: Session, dialect: Dialect) -> None:
    groups: dict[tuple[type, tuple[str, ...]], list[Any]] = defaultdict(list)
    for instance in session.dirty:
        if type(instance) not in UPDATED:
            continue
        # The attributes set since the row was loaded or flushed, those whose value changed.
        changed = tuple(sorted(key for key in inspect(instance).committed_state if get_history(instance, key).added))
        if changed:
            groups[(type(instance), changed)].append(instance)
    for (model, changed), instances in groups.items():
        if len(instances) < AT_LEAST:
            continue
        table: Table = model.__table__  # type: ignore[attr-defined]
        (key,) = (column.key for column in table.primary_key.columns)
        rows = [{key: getattr(instance, key), **{name: getattr(instance, name) for name in changed}} for instance in instances]
        for row in rows:
            _check(row, table)
        session.connection().execute(_update(table, key, changed, dialect), {"rows": recordset_json(rows)})
        for instance in instances:
            for name in changed:
                set_committed_value(instance, name, getattr(instance, name))


def _values(instance: Any, table: Table) -> dict[str, Any]:
    """Every column of a new row: the value set, else the column's default (as the ORM's INSERT would take it)."""
    given = inspect(instance).dict
    row: dict[str, Any] = {}
    for column in table.c:
        if column.key in given:
            row[column.key] = given[column.key]
        elif column.default is not None and column.default.is_scalar:
            row[column.key] = column.default.arg  # type: ignore[attr-defined]
        elif column.default is not None and column.default.is_callable:
            row[column.key] = column.default.arg(None)  # type: ignore[attr-defined]
        else:
            row[column.key] = None
    _check(row, table)
    return row


def _check(row: dict[str, Any], table: Table) -> None:
    for name, value in row.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} for {table.name}.{name}; the engine stores only aware times")


def _record(table: Table, columns: Iterable[str], dialect: Dialect) -> str:
    return ", ".join(f'"{name}" {table.c[name].type.compile(dialect)}' for name in columns)


@functools.lru_cache(maxsize=64)
def _insert(table: Table, columns: tuple[str, ...], dialect: Dialect) -> TextClause:
    names = ", ".join(f'"{name}"' for name in columns)
    return text(f'INSERT INTO "{table.name}" ({names}) SELECT {names} '
                f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({_record(table, columns, dialect)})")


@functools.lru_cache(maxsize=64)
def _update(table: Table, key: str, changed: tuple[str, ...], dialect: Dialect) -> TextClause:
    assignments = ", ".join(f'"{name}" = r."{name}"' for name in changed)
    return text(f'UPDATE "{table.name}" AS t SET {assignments} '
                f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({_record(table, (key, *changed), dialect)}) "
                f'WHERE t."{key}" = r."{key}"')
