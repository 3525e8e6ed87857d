"""What operators do with deliveries: list them, and retry, drop, resend or mark sent.

The command line (``journey deliveries``) and the admin API (``/v1/deliveries``) call
these functions, with the same checks; each action is recorded in each delivery's
trace with who took it, and in the audit log (:mod:`engine.audit`). Selections by ids
or by filter work as :mod:`engine.actions` says.

| action | applies to | makes it |
|---|---|---|
| retry | ``dead``, ``failed`` | ``pending``, enqueued, attempts from 0 (the full ``CHANNEL_MAX_ATTEMPTS``; the trace keeps the old count) |
| drop | ``dead``, ``failed``, ``unknown``, ``pending`` | ``dropped``, with ``droppedAt`` and ``droppedBy``: given up, never sent, never deleted |
| resend | ``unknown`` | ``pending``, enqueued (a second copy may arrive) |
| mark-sent | ``unknown`` | ``sent`` (when is not known: ``sentAt`` stays empty) |

A delivery is ``unknown`` when a worker stopped in the middle of its send: the provider
may or may not have it. Channels whose provider deduplicates on the idempotency key
never need an operator for those: the sweeper resends them itself
(:func:`engine.delivery.sweep_abandoned`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, aliased

from engine import actions
from engine.audit import Actor
from engine.delivery import trace_row
from engine.errors import ConflictError, NotFoundError, Problem
from engine.orchestrator import Followups
from engine.preferences import MAX_LIMIT
from engine.storage.paging import keyset_page
from engine.storage.models import DELIVERY_STATUSES, Customer, Delivery
from engine.storage.upsert import insert_rows
from engine.storage.models import TraceEntry

if TYPE_CHECKING:
    from engine.services import Services

#: Every status a delivery can have (see :class:`~engine.storage.models.Delivery`).
STATUSES = DELIVERY_STATUSES
Status = Literal["pending", "claimed", "sending", "sent", "failed", "held", "dead", "unknown", "dropped"]
LISTING_FIELDS = ("status", "channel", "journey", "reason", "since", "until", "limit", "cursor")
DeliveryId = actions.RowId


@dataclass(frozen=True)
class Rule:
    """What an action does: the statuses it applies to, and what it makes of a delivery."""

    action: str
    done: str  # the trace's word: "delivery retried"
    applies: tuple[str, ...]
    hint: str
    enqueue: bool

    def values(self, now: datetime, actor: Actor) -> dict[str, Any]:
        """The columns the action sets."""
        if self.action == "retry":
            return {"status": "pending", "attempts": 0, "error": None, "not_before": None, "enqueued_at": now,
                    "updated_at": now}
        if self.action == "drop":
            return {"status": "dropped", "dropped_at": now, "dropped_by": actor.name, "updated_at": now}
        if self.action == "resend":
            return {"status": "pending", "error": None, "enqueued_at": now, "updated_at": now}
        return {"status": "sent", "error": None, "updated_at": now}


RULES = {
    rule.action: rule for rule in (
        Rule("retry", "retried", ("dead", "failed"), "only dead or failed deliveries can be retried", True),
        Rule("drop", "dropped", ("dead", "failed", "unknown", "pending"),
             "only dead, failed, unknown or pending deliveries can be dropped", False),
        Rule("resend", "resent", ("unknown",),
             "only unknown deliveries can be resent (see `journey deliveries list --status unknown`)", True),
        Rule("mark-sent", "marked sent", ("unknown",),
             "only unknown deliveries can be marked sent (see `journey deliveries list --status unknown`)", False),
    )
}
ACTIONS = tuple(RULES)


class DeliveryFilter(actions.Strict):
    """Which deliveries: every condition given holds (none given: every delivery)."""

    status: Status | None = Field(None, description="only this status (`held`: see `reason`)")
    channel: actions.FilterText | None = Field(None, max_length=32, description="only this channel")
    journey: actions.FilterText | None = Field(None, max_length=100, description="only this journey's")
    reason: actions.FilterText | None = Field(
        None, max_length=200, description="only those whose error or held reason contains this, in any case")
    since: actions.Moment | None = Field(None, description="created at or after this time")
    until: actions.Moment | None = Field(None, description="created before this time")

    @model_validator(mode="after")
    def _window(self) -> DeliveryFilter:
        problem = actions.window_problem(self.since, self.until)
        if problem:
            raise PydanticCustomError("window", problem)
        return self

    def where(self) -> list[ColumnElement[bool]]:
        """The filter as SQL conditions."""
        conditions: list[ColumnElement[bool]] = []
        if self.status is not None:
            conditions.append(Delivery.status == self.status)
        if self.channel is not None:
            conditions.append(Delivery.channel == self.channel)
        if self.journey is not None:
            conditions.append(Delivery.journey_id == self.journey)
        if self.reason is not None:
            conditions.append(func.lower(Delivery.error).contains(self.reason.lower(), autoescape=True))
        if self.since is not None:
            conditions.append(Delivery.created_at >= self.since)
        if self.until is not None:
            conditions.append(Delivery.created_at < self.until)
        return conditions


class DeliveryAction(actions.Strict):
    """The deliveries an action is for: ``ids``, or every one a ``filter`` selects that the action applies to.

    ``{"all": true}`` is the same as ``{"filter": {}}``.
    """

    ids: list[DeliveryId] | None = Field(None, min_length=1, max_length=MAX_LIMIT,
                                         description=f"these deliveries (at most {MAX_LIMIT}): all of them, or none")
    filter: DeliveryFilter | None = Field(None, description="every delivery it selects that the action applies to")
    all: actions.AllTrue | None = Field(None, description="every delivery the action applies to")

    @model_validator(mode="after")
    def _one(self) -> DeliveryAction:
        given = [name for name in ("ids", "filter", "all") if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError("selection", "give the deliveries as ids, a filter, or all: true (one of them)"
                             + (f", not {' and '.join(given)}" if given else ""))
        return self


class DeliveryView(BaseModel):
    """A delivery as the API and the command line show it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: int
    customer: str = Field(description="the customer's user id")
    journey: str
    version: int
    step: str
    channel: str
    kind: str
    status: Status
    attempts: int
    error: str | None = Field(description="the last error, or why a policy held it back")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt", description="for an unknown delivery: when its send began")
    dropped_at: datetime | None = Field(None, alias="droppedAt")
    dropped_by: str | None = Field(None, alias="droppedBy")


class DeliveryPage(BaseModel):
    """A page of deliveries, oldest first."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    deliveries: list[DeliveryView]
    next_cursor: str | None = Field(alias="nextCursor", description="pass as cursor for the next page")


class DeliveryActionResult(BaseModel):
    """What an action did."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    action: str
    acted: int = Field(description="how many deliveries it changed")
    deliveries: list[DeliveryView] | None = Field(
        None, description="the deliveries as they are now (selected by ids; by a filter, only the count)")
    enqueued: bool | None = Field(None, description="retry and resend: False if the broker could not take them "
                                                    "now (they are pending: the scheduler enqueues them)")
    audit_id: int = Field(alias="auditId", description="the action's row in the audit log")


def read_listing(query: Mapping[str, Any]) -> actions.Listing[DeliveryFilter]:
    """Check a listing query: the filter's fields, ``limit`` and ``cursor``, all optional.

    Raises:
        PayloadError: every problem found, each naming its parameter.
    """
    return actions.read_listing(query, DeliveryFilter, LISTING_FIELDS, "status=dead&channel=email&limit=100", "deliveries")


def list_deliveries(session: Session, listing: actions.Listing[DeliveryFilter]) -> tuple[list[DeliveryView], str | None]:
    """A page of deliveries, oldest first; the entries, and the cursor of the next page (None: the last)."""
    query = select(Delivery).where(*listing.filter.where())
    if listing.filter.since is None and listing.filter.until is None:
        rows, cursor = keyset_page(session, query, Delivery.id, listing.limit, listing.after)
        return views(session, [delivery for delivery, in rows]), cursor
    # A time window: read its rows by ix_deliveries_created_at and sort them. Given the whole
    # query, PostgreSQL walks the id index from the first id and filters on the time, which
    # for the last day of 1M deliveries skips almost all of them (bench/console.py).
    if listing.after is not None:
        query = query.where(Delivery.id > listing.after)
    window = aliased(Delivery, query.offset(0).subquery("window"))
    rows, cursor = keyset_page(session, select(window), window.id, listing.limit, None)
    return views(session, [delivery for delivery, in rows]), cursor


def views(session: Session, deliveries: Sequence[Delivery]) -> list[DeliveryView]:
    """The deliveries as shown, with their customers' user ids."""
    users = dict(session.execute(
        select(Customer.id, Customer.external_id).where(Customer.id.in_({d.customer_id for d in deliveries}))
    ).all()) if deliveries else {}
    return [delivery_view(d, users.get(d.customer_id)) for d in deliveries]


def delivery_view(delivery: Delivery, user_id: str | None) -> DeliveryView:
    """A delivery as the API and the command line show it."""
    return DeliveryView(
        id=delivery.id, customer=user_id if user_id is not None else f"customer {delivery.customer_id}",
        journey=delivery.journey_id, version=delivery.version, step=delivery.step, channel=delivery.channel,
        kind=delivery.kind, status=delivery.status, attempts=delivery.attempts, error=delivery.error,
        created_at=delivery.created_at, updated_at=delivery.updated_at, dropped_at=delivery.dropped_at,
        dropped_by=delivery.dropped_by,
    )


def act(services: Services, action: str, selection: DeliveryAction, actor: Actor) -> DeliveryActionResult:
    """Carry out ``action`` (one of :data:`ACTIONS`) on the deliveries ``selection`` names.

    Raises:
        NotFoundError: an id names no delivery (every such id named).
        ConflictError: by ids, a delivery the action does not apply to (each one named, with its status).
        PayloadError: by filter, a status the action does not apply to.
    """
    rule = RULES[action]
    enqueue = _enqueue(services) if rule.enqueue else None
    name = f"deliveries.{action}"
    if selection.ids is not None:
        ids = list(dict.fromkeys(selection.ids))
        changed, enqueued, entry = actions.by_ids(
            services, actor, name, ids, lambda session, now: _change_ids(session, rule, ids, now, actor), enqueue)
        return DeliveryActionResult(action=action, acted=len(changed), deliveries=changed,
                                    enqueued=enqueued if rule.enqueue else None, audit_id=entry)
    wanted = selection.filter or DeliveryFilter()
    if wanted.status is not None and wanted.status not in rule.applies:
        raise ConflictError("the request", [Problem("filter.status", f"{wanted.status} deliveries cannot be "
                                                                    f"{rule.done}; {rule.hint}")])
    upto = _newest(services, wanted, rule)
    recorded = {"filter": wanted.model_dump(mode="json", exclude_none=True)}

    def batch(session: Session, after: int | None, now: datetime) -> tuple[int | None, list[DeliveryView]]:
        if upto is None:
            return None, []
        query = select(Delivery).where(*wanted.where(), Delivery.status.in_(rule.applies), Delivery.id <= upto)
        if after is not None:
            query = query.where(Delivery.id > after)
        rows = list(session.execute(query.order_by(Delivery.id).limit(actions.BATCH).with_for_update()).scalars())
        if not rows:
            return None, []
        return rows[-1].id, _change(session, rule, rows, now, actor)

    acted, enqueued, entry = actions.by_filter(services, actor, name, recorded, batch, enqueue)
    return DeliveryActionResult(action=action, acted=acted, enqueued=enqueued if rule.enqueue else None,
                                audit_id=entry)


def count_applicable(session: Session, action: str, wanted: DeliveryFilter, cap: int) -> int:
    """How many deliveries ``action`` on the filter ``wanted`` would change now, counted up to ``cap`` + 1
    (more than ``cap``: ``cap + 1``), so a confirmation costs the same on a million rows."""
    rule = RULES[action]
    if wanted.status is not None and wanted.status not in rule.applies:
        return 0
    some = select(Delivery.id).where(*wanted.where(), Delivery.status.in_(rule.applies)).limit(cap + 1).subquery()
    return int(session.execute(select(func.count()).select_from(some)).scalar_one())


def _newest(services: Services, wanted: DeliveryFilter, rule: Rule) -> int | None:
    """The newest delivery the action on a filter may take: rows written after it starts are not its."""
    with services.sessions() as session:
        return session.execute(
            select(func.max(Delivery.id)).where(*wanted.where(), Delivery.status.in_(rule.applies))
        ).scalar_one_or_none()


def _enqueue(services: Services) -> Any:
    def enqueue(changed: list[DeliveryView]) -> bool:
        return bool(services.dispatch(Followups(deliveries=[(d.id, d.channel) for d in changed])))

    return enqueue


def _change_ids(session: Session, rule: Rule, ids: list[int], now: datetime, actor: Actor) -> list[DeliveryView]:
    """Lock the deliveries ``ids`` and change them all; raise naming every one that is missing or refused."""
    found = {d.id: d for d in session.execute(
        select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id).with_for_update()
    ).scalars()}
    missing = [i for i in ids if i not in found]
    wrong = [Problem(f"ids[{index}]", f"delivery {i} is {found[i].status}; {rule.hint}")
             for index, i in enumerate(ids) if i in found and found[i].status not in rule.applies]
    if missing:
        others = f" (and {'; '.join(p.message for p in wrong)})" if wrong else ""
        raise NotFoundError(f"no delivery has the id {', '.join(map(str, missing))}{others}")
    if wrong:
        raise ConflictError("the request", wrong)
    return _change(session, rule, [found[i] for i in ids], now, actor)


def _change(session: Session, rule: Rule, rows: list[Delivery], now: datetime, actor: Actor) -> list[DeliveryView]:
    """Apply ``rule`` to the locked ``rows`` and trace each (a retry notes the attempts it had)."""
    traces = []
    for delivery in rows:
        note = f"by {actor.note}"
        if rule.action == "retry":
            note += f", after {delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
        traces.append(trace_row(delivery, now, rule.done, None, note))
        for column, value in rule.values(now, actor).items():
            setattr(delivery, column, value)
    session.flush()
    insert_rows(session, TraceEntry, traces)
    return views(session, rows)


# The command line's and the older API's names for two of the actions.
def resend_now(services: Services, selection: DeliveryAction, actor: Actor) -> DeliveryActionResult:
    """Send unknown deliveries again (:func:`act` ``resend``)."""
    return act(services, "resend", selection, actor)


def mark_sent_now(services: Services, selection: DeliveryAction, actor: Actor) -> DeliveryActionResult:
    """Record unknown deliveries as sent (:func:`act` ``mark-sent``)."""
    return act(services, "mark-sent", selection, actor)


__all__ = [
    "ACTIONS", "DeliveryAction", "count_applicable", "DeliveryActionResult", "DeliveryFilter", "DeliveryPage",
    "DeliveryView", "RULES", "STATUSES", "act", "delivery_view", "list_deliveries", "mark_sent_now", "read_listing",
    "resend_now", "views",
]
