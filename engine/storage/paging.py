"""Keyset paging, the one way every listing pages: ``limit`` rows after (or, newest first,
before) the id a cursor names, and the cursor of the next page.

Suppressions, deliveries, failed events and the audit log page this way, on an index of
their id, so a page costs the same on the millionth row as on the first.
"""

from __future__ import annotations

from typing import TypeVar, TypeVarTuple

from sqlalchemy import Row, Select
from sqlalchemy.orm import InstrumentedAttribute, Session

E = TypeVar("E")
Ts = TypeVarTuple("Ts")


def keyset_page(session: Session, query: Select[E, *Ts], key: InstrumentedAttribute[int], limit: int,
                cursor: int | None, *, newest_first: bool = False) -> tuple[list[Row[E, *Ts]], str | None]:
    """A page of ``query``'s rows ordered by ``key`` (an id of the entity each row starts with).

    Returns:
        The rows (at most ``limit``), and the cursor of the next page: the last row's
        ``key`` as text, or None when this page is the last.
    """
    if cursor is not None:
        query = query.where(key < cursor if newest_first else key > cursor)
    rows = list(session.execute(query.order_by(key.desc() if newest_first else key).limit(limit + 1)).all())
    page = rows[:limit]
    return page, (str(getattr(page[-1][0], key.key)) if len(rows) > limit else None)


__all__ = ["keyset_page"]
