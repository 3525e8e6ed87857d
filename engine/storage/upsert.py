"""INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Insert


def insert_ignore(session: Session, model: Any, rows: Sequence[dict[str, Any]] | dict[str, Any], conflict: Sequence[str]) -> Insert:
    """Return one INSERT of ``rows`` into ``model`` that skips rows clashing on ``conflict``.

    The caller adds ``.returning(...)`` if it wants the ids of the rows that went in.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).values(rows).on_conflict_do_nothing(index_elements=list(conflict))
