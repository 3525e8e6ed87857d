"""INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
