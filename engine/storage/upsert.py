"""INSERT ... ON CONFLICT DO NOTHING (and counters: DO UPDATE) on PostgreSQL and SQLite alike."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Dialect, Row, Table, TextClause, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Insert


def insert_ignore(
    session: Session, model: Any, row: dict[str, Any] | None, conflict: Sequence[str]
) -> Insert:
    """Return an INSERT into ``model`` that skips rows clashing on ``conflict``.

    With ``row`` the values are part of the statement; with ``None`` the statement takes
    its rows as execute() parameters (one cached statement for any number of rows). The
    caller adds ``.returning(...)`` if it wants to know which rows went in.
    """
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)
    if row is not None:
        insert = insert.values(row)
    return insert.on_conflict_do_nothing(index_elements=list(conflict))


def insert_rows(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], conflict: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[Row]:  # bare: as many columns as ``returning`` names
    """Insert many ``rows`` into ``model``'s table in one statement; skip clashes on ``conflict``.

    On PostgreSQL the rows travel as one JSON parameter (``jsonb_to_recordset``): the
    statement's text depends only on the columns, so it is parsed and prepared once
    instead of once per batch size, whatever the number of rows. Elsewhere it is an
    executemany. Every row must have the same keys. Returns the ``returning`` columns
    of the rows inserted (none for rows skipped).
    """
    if not rows:
        return []
    connection = session.connection()
    columns = tuple(rows[0])
    if connection.dialect.name == "postgresql":
        statement = _recordset_insert(model.__table__, columns, tuple(conflict), tuple(returning), connection.dialect)
        result = connection.execute(statement, {"rows": recordset_json(rows)})
    else:
        insert = insert_ignore(session, model, None, conflict) if conflict else sqlite.insert(model)
        if returning:
            insert = insert.returning(*(model.__table__.c[name] for name in returning))
        result = connection.execute(insert, list(rows))
    return list(result.all()) if returning else []


def add_counts(session: Session, model: Any, key: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Add each row's ``count`` to the row of ``model`` with the same ``key`` columns (inserting it if none).

    One statement for all rows, taken in key order so that two transactions counting the
    same rows lock them in the same order.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)
    statement = insert.on_conflict_do_update(
        index_elements=list(key), set_={"count": model.__table__.c["count"] + insert.excluded["count"]}
    )
    session.execute(statement, sorted(rows, key=lambda row: tuple(row[k] for k in key)))


@functools.lru_cache(maxsize=64)
def _recordset_insert(table: Table, columns: tuple[str, ...], conflict: tuple[str, ...], returning: tuple[str, ...],
                      dialect: Dialect) -> TextClause:
    sql = recordset_insert_sql(table, columns, "rows", dialect)
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return text(sql)


def recordset_insert_sql(table: Table, columns: Sequence[str], parameter: str, dialect: Dialect) -> str:
    """PostgreSQL: ``INSERT INTO table (columns) SELECT ...`` of the rows in the JSON parameter ``parameter``
    (:func:`recordset_json`), to use in a statement of one's own (a ``WITH``)."""
    types = ", ".join(f'"{name}" {table.c[name].type.compile(dialect)}' for name in columns)
    names = ", ".join(f'"{name}"' for name in columns)
    return (
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} '
        f"FROM jsonb_to_recordset(CAST(:{parameter} AS jsonb)) AS r({types})"
    )


def recordset_json(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as the JSON parameter of a ``jsonb_to_recordset`` statement."""
    return orjson.dumps(list(rows), default=_json_default).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")
