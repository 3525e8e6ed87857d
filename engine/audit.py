"""The audit log: every operator action, who took it, when, on what, and how many rows it changed.

An action (``journey deliveries retry``, ``POST /v1/events/failed/drop``...) writes one
row when it starts and adds to its count in the same transaction as each batch of rows
it changes, so the count is exact even when the action stopped half-way; ``finishedAt``
is set when it is done. Who: an API key by its id, prefix and name (never the key), or
``cli:<operating-system user>`` for the command line. ``journey audit`` and
``GET /v1/audit`` list it, newest first.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.preferences import DEFAULT_LIMIT, MAX_LIMIT, RequestFields
from engine.storage.models import AuditEntry
from engine.storage.paging import keyset_page

if TYPE_CHECKING:
    from engine.keys import Principal


@dataclass(frozen=True)
class Actor:
    """Who takes an action: ``name`` for the audit log, ``note`` for the trace, the key's id if a key."""

    name: str
    note: str
    key_id: int | None = None

    @classmethod
    def command_line(cls) -> Actor:
        """The operating-system user running ``journey``."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no user name in this environment (a bare container)
            user = "unknown"
        return cls(f"cli:{user}", f"command line ({user})")

    @classmethod
    def of_key(cls, principal: Principal) -> Actor:
        """An admin API key, named by id, prefix and name."""
        return cls(principal.actor, f"admin API, key {principal.name}", principal.key_id)

    @classmethod
    def of_console(cls, principal: Principal) -> Actor:
        """An operator signed in to the web console with a key, named by id, prefix and name."""
        return cls(principal.actor, f"console, key {principal.name}", principal.key_id)


def start(session: Session, actor: Actor, action: str, selection: dict[str, Any], now: datetime,
          acted: int = 0, *, finished: bool = False) -> int:
    """Write the row of an action that starts now; return its id."""
    entry = AuditEntry(at=now, actor=actor.name, key_id=actor.key_id, action=action, selection=selection,
                       acted=acted, finished_at=now if finished else None)
    session.add(entry)
    session.flush()
    return entry.id


def add(session: Session, entry_id: int, acted: int) -> None:
    """Count ``acted`` more rows for the action ``entry_id`` (in the transaction that changed them)."""
    if acted:
        session.execute(update(AuditEntry).where(AuditEntry.id == entry_id).values(acted=AuditEntry.acted + acted))


def finish(session: Session, entry_id: int, now: datetime) -> int:
    """Mark the action ``entry_id`` done; return how many rows it acted on."""
    session.execute(update(AuditEntry).where(AuditEntry.id == entry_id).values(finished_at=now))
    return int(session.execute(select(AuditEntry.acted).where(AuditEntry.id == entry_id)).scalar_one())


class AuditView(BaseModel):
    """One action of the audit log, as the API and ``journey audit --json`` show it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: int
    at: datetime
    actor: str = Field(description="an API key (`key <id> <prefix>… (<name>)`, never the key) or `cli:<os user>`")
    action: str = Field(description="what was done, e.g. `deliveries.retry`, `events.drop`")
    selection: dict[str, Any] = Field(description='what it was given: {"ids": [...]} or {"filter": {...}}')
    acted: int = Field(description="how many rows it changed")
    finished_at: datetime | None = Field(None, alias="finishedAt",
                                         description="when it was done; empty while it runs, or if it stopped")


class AuditPage(BaseModel):
    """A page of the audit log, newest first."""

    entries: list[AuditView]
    next_cursor: str | None = Field(None, alias="nextCursor", description="pass as cursor for the next page")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


def view(entry: AuditEntry) -> AuditView:
    """An audit row as shown."""
    return AuditView(id=entry.id, at=entry.at, actor=entry.actor, action=entry.action, selection=entry.selection,
                     acted=entry.acted, finished_at=entry.finished_at)


def read_listing(query: Mapping[str, Any]) -> tuple[int, int | None]:
    """Check a listing query of the audit log: ``limit`` and ``cursor``, both optional.

    Raises:
        PayloadError: every problem found, each naming its parameter.
    """
    fields = RequestFields(dict(query), ("limit", "cursor"), "limit=100", "parameter")
    limit = fields.whole("limit", 1, MAX_LIMIT, f"the entries per page, 1 to {MAX_LIMIT}")
    cursor = fields.cursor("cursor")
    fields.raise_if_any("the listing")
    return limit or DEFAULT_LIMIT, cursor


def list_entries(session: Session, limit: int = DEFAULT_LIMIT, before: int | None = None) -> AuditPage:
    """A page of the audit log, newest first, of ``limit`` entries older than the id ``before``."""
    page, cursor = keyset_page(session, select(AuditEntry), AuditEntry.id, max(1, min(limit, MAX_LIMIT)), before,
                               newest_first=True)
    return AuditPage(entries=[view(entry) for entry, in page], next_cursor=cursor)


__all__ = ["Actor", "AuditPage", "AuditView", "add", "finish", "list_entries", "read_listing", "start", "view"]
