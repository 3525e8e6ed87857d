"""What operators do with stored events that keep failing to apply: list them, retry or drop them.

A worker that fails to apply an event records the error and counts the attempt
(:func:`engine.workers.actors.process_event`); Dramatiq retries it, and after
:data:`~engine.orchestrator.MAX_EVENT_ATTEMPTS` attempts it is left for an operator:
the sweeper no longer enqueues it and timers no longer wait for it. Its status here:

- ``failing``: not applied, failed at least once, still retried by the workers;
- ``failed``: not applied, given up after ``MAX_EVENT_ATTEMPTS`` attempts;
- ``dropped``: an operator gave up on it (``droppedAt``, ``droppedBy``); it is never
  applied, and the row stays (nothing is deleted).

| action | applies to | makes it |
|---|---|---|
| retry | ``failing``, ``failed`` | pending, enqueued, attempts from 0 (the full ``MAX_EVENT_ATTEMPTS``); the last error stays |
| drop | ``failing``, ``failed`` | ``dropped``: ``processed_at`` is set as well, so no worker or sweep applies it |

Selections by ids or by filter, the audit log and the refusals work as
:mod:`engine.actions` says. ``journey events`` and ``/v1/events/failed`` call these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from engine import actions
from engine.audit import Actor
from engine.errors import ConflictError, NotFoundError, Problem
from engine.orchestrator import MAX_EVENT_ATTEMPTS
from engine.preferences import MAX_LIMIT
from engine.storage.paging import keyset_page
from engine.storage.models import Event

if TYPE_CHECKING:
    from engine.services import Services

STATUSES = ("failing", "failed", "dropped")
EventStatus = Literal["failing", "failed", "dropped"]
ACTIONS = ("retry", "drop")
LISTING_FIELDS = ("status", "name", "source", "since", "until", "limit", "cursor")
EventId = actions.RowId
#: The event's name as filters and lists show it: a track's event, a page's name, else its type.
NAME = func.coalesce(Event.event, Event.name, Event.type)


def status_condition(status: str) -> ColumnElement[bool]:
    """The rows of one status (:data:`STATUSES`)."""
    if status == "failing":
        return and_(Event.processed_at.is_(None), Event.attempts > 0, Event.attempts < MAX_EVENT_ATTEMPTS)
    if status == "failed":
        return and_(Event.processed_at.is_(None), Event.attempts >= MAX_EVENT_ATTEMPTS)
    return Event.dropped_at.is_not(None)


#: What the actions apply to: events not applied that failed at least once.
ACTIONABLE = and_(Event.processed_at.is_(None), Event.attempts > 0)


def status_of(event: Event) -> str:
    """The status of a stored event: one of :data:`STATUSES`, or ``applied`` / ``pending``."""
    if event.dropped_at is not None:
        return "dropped"
    if event.processed_at is not None:
        return "applied"
    if event.attempts >= MAX_EVENT_ATTEMPTS:
        return "failed"
    return "failing" if event.attempts > 0 else "pending"


class EventFilter(actions.Strict):
    """Which events: every condition given holds (none given: every failing and failed event)."""

    status: EventStatus | None = Field(None, description="only this status (none: failing and failed)")
    name: actions.FilterText | None = Field(None, max_length=255, description="only this event (a track's event, a page's name, "
                                                               "else the type: identify...)")
    source: actions.FilterText | None = Field(None, max_length=100, description="only those sent with this key name")
    since: actions.Moment | None = Field(None, description="received at or after this time")
    until: actions.Moment | None = Field(None, description="received before this time")

    @model_validator(mode="after")
    def _window(self) -> EventFilter:
        problem = actions.window_problem(self.since, self.until)
        if problem:
            raise PydanticCustomError("window", problem)
        return self

    def where(self) -> list[ColumnElement[bool]]:
        """The filter as SQL conditions."""
        conditions = [status_condition(self.status) if self.status is not None else ACTIONABLE]
        if self.name is not None:
            conditions.append(NAME == self.name)
        if self.source is not None:
            conditions.append(Event.source == self.source)
        if self.since is not None:
            conditions.append(Event.received_at >= self.since)
        if self.until is not None:
            conditions.append(Event.received_at < self.until)
        return conditions


class EventAction(actions.Strict):
    """The events an action is for: ``ids``, or every one a ``filter`` selects that the action applies to."""

    ids: list[EventId] | None = Field(None, min_length=1, max_length=MAX_LIMIT,
                                      description=f"these events (at most {MAX_LIMIT}): all of them, or none")
    filter: EventFilter | None = Field(None, description="every event it selects that the action applies to")

    @model_validator(mode="after")
    def _one(self) -> EventAction:
        if (self.ids is None) == (self.filter is None):
            raise PydanticCustomError("selection", "give the events as ids or a filter (one of them)"
                             + (", not both" if self.ids is not None else ""))
        return self


class FailedEventView(BaseModel):
    """A stored event that failed to apply, as the API and the command line show it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: int
    status: str = Field(description="failing, failed or dropped (applied or pending once retried)")
    source: str
    message_id: str = Field(alias="messageId")
    type: str
    name: str = Field(description="a track's event, a page's name, else the type")
    user_id: str | None = Field(alias="userId")
    anonymous_id: str | None = Field(alias="anonymousId")
    attempts: int
    error: str | None = Field(description="the last error")
    timestamp: datetime
    received_at: datetime = Field(alias="receivedAt")
    dropped_at: datetime | None = Field(None, alias="droppedAt")
    dropped_by: str | None = Field(None, alias="droppedBy")


class FailedEventPage(BaseModel):
    """A page of failed events, oldest first."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    events: list[FailedEventView]
    next_cursor: str | None = Field(alias="nextCursor", description="pass as cursor for the next page")


class EventActionResult(BaseModel):
    """What an action did."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    action: str
    acted: int = Field(description="how many events it changed")
    events: list[FailedEventView] | None = Field(
        None, description="the events as they are now (selected by ids; by a filter, only the count)")
    enqueued: bool | None = Field(None, description="retry: False if the broker could not take them now "
                                                    "(the scheduler's sweep enqueues them)")
    audit_id: int = Field(alias="auditId", description="the action's row in the audit log")


def read_listing(query: Mapping[str, Any]) -> actions.Listing[EventFilter]:
    """Check a listing query: the filter's fields, ``limit`` and ``cursor``, all optional.

    Raises:
        PayloadError: every problem found, each naming its parameter.
    """
    return actions.read_listing(query, EventFilter, LISTING_FIELDS, "status=failed&name=order_completed&limit=100", "events")


def list_failed(session: Session, listing: actions.Listing[EventFilter]) -> tuple[list[FailedEventView], str | None]:
    """A page of failed events, oldest first; the entries, and the cursor of the next page (None: the last)."""
    rows, cursor = keyset_page(session, select(Event).where(*listing.filter.where()), Event.id,
                               listing.limit, listing.after)
    return [event_view(event) for event, in rows], cursor


def event_view(event: Event) -> FailedEventView:
    """A failed event as shown."""
    return FailedEventView(
        id=event.id, status=status_of(event), source=event.source, message_id=event.message_id, type=event.type,
        name=event.event or event.name or event.type, user_id=event.user_id, anonymous_id=event.anonymous_id,
        attempts=event.attempts, error=event.error, timestamp=event.timestamp, received_at=event.received_at,
        dropped_at=event.dropped_at, dropped_by=event.dropped_by,
    )


def act(services: Services, action: str, selection: EventAction, actor: Actor) -> EventActionResult:
    """Carry out ``action`` (``retry`` or ``drop``) on the events ``selection`` names.

    Raises:
        NotFoundError: an id names no event (every such id named).
        ConflictError: by ids, an event that was applied, dropped or never failed (each one named).
    """
    name = f"events.{action}"
    enqueue = (lambda changed: bool(services.enqueue_events([e.id for e in changed]))) if action == "retry" else None
    if selection.ids is not None:
        ids = list(dict.fromkeys(selection.ids))
        changed, enqueued, entry = actions.by_ids(
            services, actor, name, ids, lambda session, now: _change_ids(session, action, ids, now, actor), enqueue)
        return EventActionResult(action=action, acted=len(changed), events=changed,
                                 enqueued=enqueued if action == "retry" else None, audit_id=entry)
    wanted = selection.filter or EventFilter()
    if wanted.status == "dropped":
        raise ConflictError("the request", [Problem("filter.status", f"dropped events cannot be "
                                                                    f"{'retried' if action == 'retry' else 'dropped'}; "
                                                                    "only failing or failed events can")])
    with services.sessions() as session:
        upto = session.execute(select(func.max(Event.id)).where(*wanted.where())).scalar_one_or_none()
    recorded = {"filter": wanted.model_dump(mode="json", exclude_none=True)}

    def batch(session: Session, after: int | None, now: datetime) -> tuple[int | None, list[FailedEventView]]:
        if upto is None:
            return None, []
        query = select(Event).where(*wanted.where(), ACTIONABLE, Event.id <= upto)
        if after is not None:
            query = query.where(Event.id > after)
        rows = list(session.execute(query.order_by(Event.id).limit(actions.BATCH).with_for_update()).scalars())
        if not rows:
            return None, []
        return rows[-1].id, _change(session, action, rows, now, actor)

    acted, enqueued, entry = actions.by_filter(services, actor, name, recorded, batch, enqueue)
    return EventActionResult(action=action, acted=acted, enqueued=enqueued if action == "retry" else None,
                             audit_id=entry)


def count_actionable(session: Session, wanted: EventFilter, cap: int) -> int:
    """How many events retry or drop on the filter ``wanted`` would change now, counted up to ``cap`` + 1."""
    if wanted.status == "dropped":
        return 0
    some = select(Event.id).where(*wanted.where(), ACTIONABLE).limit(cap + 1).subquery()
    return int(session.execute(select(func.count()).select_from(some)).scalar_one())


def _change_ids(session: Session, action: str, ids: list[int], now: datetime, actor: Actor) -> list[FailedEventView]:
    """Lock the events ``ids`` and change them all; raise naming every one that is missing or refused."""
    found = {e.id: e for e in session.execute(
        select(Event).where(Event.id.in_(ids)).order_by(Event.id).with_for_update()
    ).scalars()}
    missing = [i for i in ids if i not in found]
    verb = "retried" if action == "retry" else "dropped"
    wrong = []
    for index, i in enumerate(ids):
        event = found.get(i)
        if event is None or (event.processed_at is None and event.attempts > 0):
            continue
        status = status_of(event)
        if status == "dropped":
            why = f"was dropped at {event.dropped_at:%Y-%m-%d %H:%M:%S} by {event.dropped_by}"
        elif status == "applied":
            why = f"was applied at {event.processed_at:%Y-%m-%d %H:%M:%S}"
        else:
            why = "has not failed: it waits for a worker"
        wrong.append(Problem(f"ids[{index}]", f"event {i} {why}; only failing or failed events can be {verb}"))
    if missing:
        others = f" (and {'; '.join(p.message for p in wrong)})" if wrong else ""
        raise NotFoundError(f"no event has the id {', '.join(map(str, missing))}{others}")
    if wrong:
        raise ConflictError("the request", wrong)
    return _change(session, action, [found[i] for i in ids], now, actor)


def _change(session: Session, action: str, rows: Sequence[Event], now: datetime, actor: Actor) -> list[FailedEventView]:
    """Retry or drop the locked ``rows``."""
    for event in rows:
        if action == "retry":
            event.attempts, event.enqueued_at = 0, now
        else:
            event.processed_at, event.dropped_at, event.dropped_by = now, now, actor.name
    session.flush()
    return [event_view(e) for e in rows]


__all__ = [
    "ACTIONS", "EventAction", "count_actionable", "EventActionResult", "EventFilter", "FailedEventPage",
    "FailedEventView", "STATUSES", "act", "event_view", "list_failed", "read_listing", "status_of",
]
