"""What every operator action shares: a selection by ids or by filter, done in batches, audited.

Deliveries (:mod:`engine.deliveries`) and failed events (:mod:`engine.failed_events`)
are acted on the same way, by the command line and the admin API alike:

- **By ids** (at most :data:`~engine.preferences.MAX_LIMIT`): all or nothing, in one
  transaction. An id that names nothing is a 404 (``RET_NOT_FOUND``); a row the action
  does not apply to is refused with its reason (409, ``RET_INVALID``), and nothing is done.
- **By filter**: every row the filter selects that the action applies to, up to the
  newest one when the action starts, :data:`BATCH` rows per transaction (never one
  transaction over a million rows); queue messages go after each commit. Rows the
  action does not apply to are left alone.

Each action writes a row to the audit log (:mod:`engine.audit`), counted batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from engine import audit
from engine.errors import PayloadError, Problem
from engine.preferences import DEFAULT_LIMIT, MAX_LIMIT, RequestFields
from engine.segment import parse_time, whole_number

if TYPE_CHECKING:
    from engine.services import Services

#: Rows changed per transaction by an action on a filter.
BATCH = 500
#: The largest id (a BIGINT).
MAX_ID = 2**63 - 1

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _whole(value: Any) -> Any:
    """An id as JSON gives it: a whole number (``42``, ``42.0``); not a string, not a boolean."""
    number = whole_number(value)
    if number is None:
        raise ValueError(f"must be a whole number such as 42, not {value!r}")
    return number


def _true(value: Any) -> Any:
    if value is not True:
        raise ValueError(f"must be true (or left out), not {value!r}")
    return value


def _moment(value: Any) -> Any:
    """A time as the rest of the API reads it (:func:`engine.segment.parse_time`), with its zone."""
    if isinstance(value, datetime):
        return value
    moment = parse_time(value)
    if datetime.fromisoformat(value.upper()).tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: add Z (UTC) or an offset such as +02:00")
    return moment


def _present(value: str) -> str:
    if not value.strip():
        raise ValueError(f"must not be blank ({value!r}): leave it out to select every one")
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\u0000), which cannot be looked up; remove it")
    return value


#: A row's id: a whole number from 1 to :data:`MAX_ID` (a string or a boolean is refused).
RowId = Annotated[int, BeforeValidator(_whole), Field(ge=1, le=MAX_ID)]
#: ``{"all": true}``: only ``true`` itself (not 1).
AllTrue = Annotated[Literal[True], BeforeValidator(_true)]
#: A filter's time: an ISO-8601 time with its zone (read in UTC), as everywhere in the API.
Moment = Annotated[AwareDatetime, BeforeValidator(_moment)]
#: A filter's text: not blank (leave the filter out instead), no NUL; its length is the field's.
FilterText = Annotated[str, AfterValidator(_present)]


class Strict(BaseModel):
    """A request model that refuses fields it does not know (a typo is an error, not ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


def checked(model: type[M], data: dict[str, Any], subject: str = "the request") -> M:
    """``model`` built from ``data``, or a PayloadError naming every problem (for the command line)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(subject, [
            Problem(".".join(str(p) for p in error["loc"]) or "request", error["msg"].removeprefix("Value error, "))
            for error in exc.errors()
        ]) from None


@dataclass(frozen=True)
class Listing(Generic[M]):
    """A checked listing query: a filter, the page size, and the last id of the previous page."""

    filter: M
    limit: int = DEFAULT_LIMIT
    after: int | None = None


def read_listing(query: Mapping[str, Any], model: type[M], fields: Sequence[str], example: str,
                 noun: str) -> Listing[M]:
    """Check a listing query: ``model``'s filter fields, ``limit`` and ``cursor``, all optional.

    ``fields`` are the filter's names, then ``limit`` and ``cursor``; ``example`` is a good
    query, shown when this one is not; ``noun`` names the entries (``"deliveries"``).

    Raises:
        PayloadError: every problem found, each naming its parameter.
    """
    request = RequestFields(dict(query), tuple(fields), example, "parameter")
    limit = request.whole("limit", 1, MAX_LIMIT, f"the {noun} per page, 1 to {MAX_LIMIT}")
    cursor = request.cursor("cursor")
    request.raise_if_any("the listing")
    wanted = checked(model, {k: query[k] for k in fields if k not in ("limit", "cursor") and k in query}, "the listing")
    return Listing(wanted, DEFAULT_LIMIT if limit is None else limit, cursor)


def window_problem(since: datetime | None, until: datetime | None) -> str | None:
    """What is wrong with a time window ``[since, until)``, if anything."""
    if since is not None and until is not None and since >= until:
        return f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
    return None


def by_filter(services: Services, actor: audit.Actor, action: str, selection: dict[str, Any],
              batch: Callable[[Session, int | None, datetime], tuple[int | None, list[T]]],
              after_commit: Callable[[list[T]], bool] | None = None) -> tuple[int, bool, int]:
    """Run an action on a filter, batch by batch, audited.

    Args:
        batch: ``batch(session, after, now)`` changes the next rows after the id ``after``
            (None: from the start) and returns (the last id it looked at, None when none is
            left; what it changed).
        after_commit: called with what each batch changed once it committed (enqueueing);
            False if the broker could not take it.

    Returns:
        How many rows were acted on, whether every after_commit succeeded, the audit id.
    """
    with services.sessions.begin() as session:
        entry = audit.start(session, actor, action, selection, services.clock())
    after: int | None = None
    delivered = True
    while True:
        with services.sessions.begin() as session:
            after, changed = batch(session, after, services.clock())
            audit.add(session, entry, len(changed))
        if changed and after_commit is not None:
            delivered = after_commit(changed) and delivered
        if after is None:
            break
    with services.sessions.begin() as session:
        acted = audit.finish(session, entry, services.clock())
    return acted, delivered, entry


def by_ids(services: Services, actor: audit.Actor, action: str, ids: Sequence[int],
           change: Callable[[Session, datetime], list[T]],
           after_commit: Callable[[list[T]], bool] | None = None) -> tuple[list[T], bool, int]:
    """Run an action on ``ids`` in one transaction with its audit row: all of them, or none (``change`` raises).

    Returns:
        What was changed, whether after_commit succeeded, the audit id.
    """
    with services.sessions.begin() as session:
        now = services.clock()
        changed = change(session, now)
        entry = audit.start(session, actor, action, {"ids": list(ids)}, now, len(changed), finished=True)
    delivered = after_commit(changed) if changed and after_commit is not None else True
    return changed, delivered, entry


__all__ = ["BATCH", "MAX_ID", "AllTrue", "FilterText", "Moment", "RowId", "Strict", "by_filter", "by_ids", "checked", "window_problem"]
