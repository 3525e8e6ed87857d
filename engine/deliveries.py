"""What operators do with deliveries: list them by status, and resolve the ``unknown`` ones.

A delivery is ``unknown`` when a worker stopped in the middle of its send: the
provider may or may not have it. An operator who knows (the provider's logs, the
customer) says so: **resend** it (pending again and enqueued; a second copy may arrive)
or **mark it sent**. The admin API (``/v1/deliveries``) and ``journey deliveries`` call
the same functions with the same checks, and each action is recorded in the delivery's
trace with who took it. Channels whose provider deduplicates on the idempotency key
never need this: the sweeper resends their unknown deliveries itself
(:func:`engine.delivery.sweep_abandoned`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.delivery import trace_row
from engine.errors import ConflictError, NotFoundError, Problem
from engine.orchestrator import Followups
from engine.preferences import DEFAULT_LIMIT, MAX_LIMIT, RequestFields
from engine.segment import whole_number
from engine.storage.models import Customer, Delivery, TraceEntry
from engine.storage.upsert import insert_rows

if TYPE_CHECKING:
    from engine.services import Services

#: Every status a delivery can have (see :class:`~engine.storage.models.Delivery`).
STATUSES = ("pending", "claimed", "sending", "sent", "failed", "held", "dead", "unknown")
LISTING_FIELDS = ("status", "limit", "cursor")
SELECTION_FIELDS = ("ids", "all")
#: The largest delivery id (a BIGINT).
MAX_DELIVERY_ID = 2**63 - 1


@dataclass(frozen=True)
class DeliveryListing:
    """A checked listing query: a status filter, the page size, and the last id of the previous page."""

    status: str | None = None
    limit: int = DEFAULT_LIMIT
    after: int | None = None


@dataclass(frozen=True)
class Selection:
    """Deliveries an action is for: these ``ids``, or ``every`` delivery it applies to."""

    ids: tuple[int, ...] = ()
    every: bool = False


def read_listing(query: Mapping[str, Any]) -> DeliveryListing:
    """Check a listing query: ``status``, ``limit`` and ``cursor``, all optional.

    Raises:
        PayloadError: every problem found, each naming its parameter.
    """
    fields = RequestFields(dict(query), LISTING_FIELDS, "status=unknown&limit=100", "parameter")
    status = fields.choice("status", STATUSES, "a delivery status") if "status" in query else None
    limit = fields.whole("limit", 1, MAX_LIMIT, f"the deliveries per page, 1 to {MAX_LIMIT}")
    cursor = fields.cursor("cursor")
    fields.raise_if_any("the listing")
    return DeliveryListing(status, DEFAULT_LIMIT if limit is None else limit, cursor)


def read_selection(body: Any, *, every: bool = True) -> Selection:
    """Check an action's body: ``{"ids": [1, 2]}``, or ``{"all": true}`` where ``every`` allows it.

    Raises:
        PayloadError: every problem found, each naming its field.
    """
    fields = RequestFields(body, SELECTION_FIELDS if every else ("ids",), '{"ids": [12, 13]}')
    ids, everything = body.get("ids"), body.get("all")
    if everything is not None and every and everything is not True:
        fields.problem("all", f"must be true (every unknown delivery), not {everything!r}; or give ids")
    if ids is None and everything is None:
        fields.problem("ids", "is required: the ids of the deliveries" + (", or all: true" if every else ""))
    elif ids is not None and everything is not None and every:
        fields.problem("ids", "give ids or all: true, not both")
    elif ids is not None:
        if not isinstance(ids, list) or not ids:
            fields.problem("ids", f"must be a non-empty list of delivery ids, not {ids!r}")
        elif len(ids) > MAX_LIMIT:
            fields.problem("ids", f"lists {len(ids)} deliveries; at most {MAX_LIMIT} at a time")
        else:
            for index, value in enumerate(ids):
                number = whole_number(value)
                if number is None or not 1 <= number <= MAX_DELIVERY_ID:
                    fields.problem(f"ids[{index}]", f"must be a delivery id (a whole number from 1 to {MAX_DELIVERY_ID}), "
                                                    f"not {value!r}")
    fields.raise_if_any("the request")
    return Selection(tuple(dict.fromkeys(int(value) for value in ids or ())), everything is True)  # checked whole


def list_deliveries(session: Session, listing: DeliveryListing) -> tuple[list[dict[str, Any]], str | None]:
    """A page of deliveries, oldest first; the entries, and the cursor of the next page (None: the last)."""
    query = select(Delivery, Customer.external_id).join(Customer, Customer.id == Delivery.customer_id)
    if listing.status is not None:
        query = query.where(Delivery.status == listing.status)
    if listing.after is not None:
        query = query.where(Delivery.id > listing.after)
    rows = session.execute(query.order_by(Delivery.id).limit(listing.limit + 1)).all()
    page = rows[: listing.limit]
    cursor = str(page[-1][0].id) if len(rows) > listing.limit else None
    return [delivery_view(delivery, user_id) for delivery, user_id in page], cursor


def delivery_view(delivery: Delivery, user_id: str | None) -> dict[str, Any]:
    """A delivery as the API and the command line show it."""
    return {
        "id": delivery.id,
        "customer": user_id if user_id is not None else f"customer {delivery.customer_id}",
        "journey": delivery.journey_id,
        "version": delivery.version,
        "step": delivery.step,
        "channel": delivery.channel,
        "kind": delivery.kind,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "error": delivery.error,
        "createdAt": delivery.created_at.isoformat(),
        "updatedAt": delivery.updated_at.isoformat(),
    }


def resend(session: Session, selection: Selection, now: datetime, by: str) -> list[dict[str, Any]]:
    """Make the selected unknown deliveries pending again (to be enqueued after the commit).

    Returns:
        The deliveries as they are now; enqueue them with their channel.

    Raises:
        NotFoundError: an id names no delivery (all such ids named).
        ConflictError: a delivery is not ``unknown`` (each one named).
    """
    return _resolve(session, selection, now, "resent", f"by {by}",
                    {"status": "pending", "error": None, "enqueued_at": now, "updated_at": now})


def mark_sent(session: Session, selection: Selection, now: datetime, by: str) -> list[dict[str, Any]]:
    """Record the selected unknown deliveries as sent (when is not known: ``sent_at`` stays empty).

    Raises:
        NotFoundError: an id names no delivery (all such ids named).
        ConflictError: a delivery is not ``unknown`` (each one named).
    """
    return _resolve(session, selection, now, "marked sent", f"by {by}",
                    {"status": "sent", "error": None, "updated_at": now})


def resend_now(services: Services, selection: Selection, by: str) -> tuple[list[dict[str, Any]], bool]:
    """:func:`resend` in one transaction, then enqueue what it made pending.

    Returns:
        The deliveries, and False if the broker could not take them (they are pending
        in the database: the scheduler's sweep enqueues them).
    """
    with services.sessions.begin() as session:
        resent = resend(session, selection, services.clock(), by)
    enqueued = services.dispatch(Followups(deliveries=[(d["id"], d["channel"]) for d in resent])) if resent else True
    return resent, bool(enqueued)


def mark_sent_now(services: Services, selection: Selection, by: str) -> list[dict[str, Any]]:
    """:func:`mark_sent` in one transaction."""
    with services.sessions.begin() as session:
        return mark_sent(session, selection, services.clock(), by)


def _resolve(session: Session, selection: Selection, now: datetime, what: str, note: str,
             values: dict[str, Any]) -> list[dict[str, Any]]:
    """Change the selected ``unknown`` deliveries with ``values`` and trace it; all of them or none."""
    statement = update(Delivery).where(Delivery.status == "unknown")
    if not selection.every:
        _check_unknown(session, selection.ids)
        statement = statement.where(Delivery.id.in_(selection.ids))
    changed = list(session.execute(statement.values(**values).returning(Delivery)).scalars())
    insert_rows(session, TraceEntry, [trace_row(d, now, what, None, note) for d in changed])
    users = dict(session.execute(
        select(Customer.id, Customer.external_id).where(Customer.id.in_({d.customer_id for d in changed}))
    ).all())
    return [delivery_view(d, users.get(d.customer_id)) for d in sorted(changed, key=lambda d: d.id)]


def _check_unknown(session: Session, ids: Sequence[int]) -> None:
    """Lock the deliveries ``ids``; raise naming every one that does not exist or is not ``unknown``."""
    found = dict(session.execute(
        select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids)).with_for_update()
    ).all())
    missing = [i for i in ids if i not in found]
    wrong = [Problem(f"ids[{index}]", f"delivery {i} is {found[i]}, not unknown; only unknown deliveries can be "
                                      f"resolved (see `journey deliveries unknown`)")
             for index, i in enumerate(ids) if i in found and found[i] != "unknown"]
    if missing:
        others = f" (and {'; '.join(p.message for p in wrong)})" if wrong else ""
        raise NotFoundError(f"no delivery has the id {', '.join(map(str, missing))}{others}")
    if wrong:
        raise ConflictError("the request", wrong)


__all__ = [
    "DeliveryListing", "STATUSES", "Selection", "delivery_view", "list_deliveries", "mark_sent", "read_listing",
    "read_selection", "resend", "resend_now", "mark_sent_now",
]
