"""Customer profiles: who an event belongs to, their traits, time zone and stage.

Identity follows Segment: a customer is known by a user id, by anonymous ids, or by
both. An ``identify`` that brings a user id for a known anonymous id, and an ``alias``,
merge the anonymous customer's history into the known one. The merged-away row keeps
``merged_into_id`` so that every old reference still leads to the right customer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import exists, or_, select, text, update
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from channels.base import customer_label
from engine.storage.models import (
    AnonymousId, Consent, Customer, Delivery, Enrollment, Event, PointsEntry, Referral, ReferralCode, StageChange,
    Suppression,
)
from engine.storage.upsert import insert_ignore, insert_rows
from engine.unit_of_work import UnitOfWork

#: Identifies closer in time than this are ordered by receipt, not by timestamp.
SAME_MOMENT = timedelta(seconds=1)
#: The longest referral code the engine stores (``referral_codes.code``).
REFERRAL_CODE_MAX = 32
STAGES = ("awareness", "consideration", "purchase", "retention", "advocacy")


def apply_event(unit: UnitOfWork, event: Event, now: datetime, *, locked: bool = False) -> tuple[Customer, dict[str, Any]]:
    """Attach ``event`` to its customer and apply what it says about them.

    Resolves (and creates, or merges) the customer, merges ``identify`` traits, picks up
    the time zone, and marks the event processed at ``now``. The caller commits;
    ``locked``: the caller already holds :func:`lock_identities` for the event's ids and
    has locked its customers (:func:`preload` into ``unit``); otherwise both are done
    here, in the engine's lock order (docs/operations.md, "Locks").

    Returns:
        The customer, and their traits as they were before this event.
    """
    session = unit.session
    if not locked:
        lock_identities(session, event.user_id, event.anonymous_id, event.previous_id)
        preload(unit, [event])
    if event.type == "alias" and event.previous_id and event.user_id:
        customer = alias(unit, event.previous_id, event.user_id, event.timestamp)
    else:
        customer = resolve(unit, event.user_id, event.anonymous_id, event.timestamp)
    before = dict(customer.traits or {})
    if event.type == "identify" and event.traits:
        if _newer(event, customer):
            merge_traits(customer, event.traits)
            customer.traits_at, customer.traits_event_id = event.timestamp, event.id
        else:
            # An older identify processed late (workers run in parallel, clients retry):
            # what the newer ones said stands; it only fills in traits they did not set.
            customer.traits = {**event.traits, **customer.traits}
    if event.type == "identify" and event.traits:
        adopt_referral_code(session, customer, event.traits.get("referral_code"), now)
    customer.timezone = time_zone_after(event.type, event.traits, event.context, customer.timezone)
    if event.timestamp > customer.last_seen_at:
        customer.last_seen_at = event.timestamp
    customer.updated_at = now
    event.customer_id = customer.id
    event.processed_at = now
    event.error = None
    return customer, before


def _newer(event: Event, customer: Customer) -> bool:
    """Whether ``event`` is newer than the identify that set the customer's traits last.

    Timestamps decide when they are far enough apart to be trusted (an offline phone
    sending yesterday's identify today); closer than ``SAME_MOMENT``, where clock-skew
    correction can swap two calls a client made a millisecond apart, the order the
    engine received them in (the event id) decides.
    """
    if customer.traits_at is None or customer.traits_event_id is None:
        return True
    if abs(event.timestamp - customer.traits_at) > SAME_MOMENT:
        return event.timestamp > customer.traits_at
    return event.id > customer.traits_event_id


def adopt_referral_code(session: Session, customer: Customer, code: Any, now: datetime) -> None:
    """Take a ``referral_code`` trait as the customer's code in program ``default``.

    A code given out before the engine (by the app, another tool) then earns its owner
    the referrer's reward. A customer who has a ``default`` code keeps it, and a code
    someone else owns stays theirs.
    """
    if not isinstance(code, str) or not code.strip() or len(code) > REFERRAL_CODE_MAX:
        return
    has_one = session.execute(
        select(ReferralCode.code).where(ReferralCode.customer_id == customer.id, ReferralCode.program == "default")
    ).first()
    if has_one is None:
        session.execute(
            insert_ignore(
                session, ReferralCode,
                {"code": code.strip(), "customer_id": customer.id, "program": "default", "created_at": now},
                ["code"],
            )
        )


def lock_identities(session: Session, *idents: str | None) -> None:
    """Make workers that touch the same user or anonymous ids take turns (PostgreSQL).

    Without this, two events of one new visitor processed at once would each create a
    profile. Transaction-scoped advisory locks, taken in one global order, cannot
    deadlock with each other; SQLite already runs one writer at a time.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({_lock_key(ident) for ident in idents if ident})
    if keys:  # one statement, the locks taken in the array's (sorted) order
        session.execute(text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"),
                        {"keys": keys})


def _lock_key(ident: str) -> int:
    return int.from_bytes(hashlib.sha256(ident.encode("utf-8")).digest()[:8], "big", signed=True)


def resolve(unit: UnitOfWork, user_id: str | None, anonymous_id: str | None, seen_at: datetime) -> Customer:
    """Return the customer for this pair of ids, creating or merging profiles as needed."""
    session = unit.session
    known = _known(unit, user_id) if user_id else None
    visitor = by_anonymous_id(session, anonymous_id) if anonymous_id else None
    if user_id is None:
        if visitor is not None:
            return visitor
        return _create(session, None, anonymous_id, seen_at)
    if known is None:
        if visitor is not None and visitor.external_id is None:
            # The visitor has just told us who they are: the anonymous profile becomes theirs.
            visitor.external_id = user_id
            session.flush()
            return visitor
        known = _create(session, user_id, None, seen_at)
    if anonymous_id is not None:
        if visitor is None:
            _link(session, anonymous_id, known.id, seen_at)
        elif visitor.id != known.id and visitor.external_id is None:
            merge(session, visitor, known, seen_at)
    return known


def alias(unit: UnitOfWork, previous_id: str, user_id: str, seen_at: datetime) -> Customer:
    """Apply an ``alias``: whoever was known as ``previous_id`` is ``user_id`` from now on."""
    session = unit.session
    target = _known(unit, user_id) or _create(session, user_id, None, seen_at)
    previous = _known(unit, previous_id) or by_anonymous_id(session, previous_id)
    if previous is None:
        _link(session, previous_id, target.id, seen_at)
    elif previous.id != target.id:
        merge(session, previous, target, seen_at)
    return target


def merge(session: Session, source: Customer, target: Customer, at: datetime | None = None) -> None:
    """Merge ``source``'s history into ``target``; ``target``'s own traits win.

    Everything that was ``source``'s becomes ``target``'s: anonymous ids, events, stage
    history, enrollments (with their timers and trace), deliveries (but one being sent),
    points and referrals; a referral code, consent or suppression of ``target``'s own
    stays theirs. The later of the two stages is ``target``'s (the move recorded ``at``,
    the merging event's time). Enrollments left in one journey more often than its entry
    rules allow are the orchestrator's to end (docs/runtime.md, "Merges").
    """
    target.traits = {**source.traits, **target.traits}
    target.timezone = target.timezone or source.timezone
    if target.stage is None and source.stage is not None:
        target.stage, target.stage_changed_at = source.stage, source.stage_changed_at
    elif source.stage in STAGES and target.stage in STAGES and STAGES.index(source.stage) > STAGES.index(target.stage):
        set_stage(session, target, source.stage, at or source.stage_changed_at or target.updated_at,
                  f"merged with {describe(session, source)}")
    target.first_seen_at = min(target.first_seen_at, source.first_seen_at)
    target.last_seen_at = max(target.last_seen_at, source.last_seen_at)
    for column in (AnonymousId.customer_id, Event.customer_id, StageChange.customer_id, Enrollment.customer_id,
                   PointsEntry.customer_id, Referral.referrer_id):
        session.execute(update(column.class_).where(column == source.id).values({column.key: target.id}))
    # Not those a delivery worker holds: waiting for its lock here, holding the customers,
    # could deadlock with its next customer (docs/operations.md, "Locks").
    session.execute(update(Delivery).values(customer_id=target.id)
                    .where(Delivery.customer_id == source.id, Delivery.status.not_in(("claimed", "sending"))))
    _move_unless_taken(session, Referral.referred_id, source.id, target.id)
    _move_unless_taken(session, ReferralCode.customer_id, source.id, target.id, ReferralCode.program)
    _move_unless_taken(session, Consent.customer_id, source.id, target.id, Consent.channel, Consent.topic)
    _move_unless_taken(session, Suppression.customer_id, source.id, target.id, Suppression.channel, Suppression.address)
    source.merged_into_id = target.id
    session.flush()


def _move_unless_taken(session: Session, column: InstrumentedAttribute[Any], source_id: int, target_id: int,
                       *keys: InstrumentedAttribute[Any]) -> None:
    """Give ``source_id``'s rows to ``target_id``, except those whose ``keys`` a row of ``target_id`` has too."""
    other = aliased(column.class_)
    taken = exists().where(getattr(other, column.key) == target_id,
                           *(getattr(other, key.key).is_not_distinct_from(key) for key in keys))
    session.execute(update(column.class_).where(column == source_id, ~taken).values({column.key: target_id}))


def merge_traits(customer: Customer, traits: dict[str, Any]) -> None:
    """Merge ``traits`` into the customer's; a trait sent again replaces the old value."""
    customer.traits = {**customer.traits, **traits}


def set_stage(session: Session, customer: Customer, stage: str, at: datetime, reason: str) -> bool:
    """Move the customer to ``stage`` and record the move; return False if already there.

    Raises:
        ValueError: ``stage`` is not one of the five lifecycle stages.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    if customer.stage == stage:
        return False
    session.add(StageChange(customer_id=customer.id, from_stage=customer.stage, to_stage=stage, at=at, reason=reason))
    customer.stage, customer.stage_changed_at = stage, at
    return True


def preload(unit: UnitOfWork, events: Sequence[Event]) -> list[Customer]:
    """Load, lock and where needed create the customers of a batch of events, in a few statements.

    The caller holds :func:`lock_identities` for every id of ``events``. Customers of the
    events that name only a user id are created now if new (one INSERT for all). Every
    existing customer the events lead to (by user id, anonymous id or alias, and whoever
    they were merged into) is then locked in one statement, in id order (the engine's
    lock order, docs/operations.md "Locks"), so that no customer is locked later in the
    batch, after enrollments. Those known by the events' user ids stay in ``unit``, where
    :func:`resolve` and :func:`alias` find them without asking the database.

    Returns:
        The live (not merged-away) customers locked, in id order.
    """
    session = unit.session
    user_ids = {e.user_id for e in events if e.user_id}
    anonymous_ids = {e.anonymous_id for e in events if e.anonymous_id}
    previous_ids = {e.previous_id for e in events if e.previous_id}  # an alias's: a user or an anonymous id
    if not user_ids and not anonymous_ids and not previous_ids:
        return []
    first_seen: dict[str, datetime] = {}
    for event in events:
        if event.user_id and not event.anonymous_id and event.type != "alias":
            seen = first_seen.get(event.user_id)
            first_seen[event.user_id] = event.timestamp if seen is None else min(seen, event.timestamp)
    if first_seen:
        insert_rows(  # one statement, whatever the number of rows
            session, Customer,
            [
                {"external_id": user_id, "traits": {}, "first_seen_at": at, "last_seen_at": at, "updated_at": at}
                for user_id, at in sorted(first_seen.items())
            ],
            ["external_id"],
        )
    # Read without locks first: the identity locks held keep every link and merge of
    # these ids out until this transaction ends, so what is read here stays true.
    found = session.execute(
        select(Customer.id, Customer.merged_into_id).where(
            or_(
                Customer.external_id.in_(user_ids | previous_ids),
                Customer.id.in_(
                    select(AnonymousId.customer_id).where(AnonymousId.anonymous_id.in_(anonymous_ids | previous_ids))
                ),
            )
        )
    ).all()
    ids = {customer_id for customer_id, _ in found}
    targets = {target for _, target in found if target is not None} - ids
    while targets:  # merged-away customers lead to the ones they were merged into
        ids |= targets
        targets = {
            target
            for target in session.execute(
                select(Customer.merged_into_id).where(Customer.id.in_(targets), Customer.merged_into_id.is_not(None))
            ).scalars()
            if target is not None
        } - ids
    customers = lock_customers(session, ids)
    unit.by_user_id.update({customer.external_id: customer for customer in customers if customer.external_id in user_ids})
    return [customer for customer in customers if customer.merged_into_id is None]


def lock_customers(session: Session, customer_ids: Collection[int]) -> list[Customer]:
    """Lock and return the customers ``customer_ids`` in id order, in one statement.

    The one way the engine locks customer rows in bulk: a transaction locks the customers
    it needs before their enrollments, timers and deliveries, in id order
    (docs/operations.md, "Locks"). ``FOR NO KEY UPDATE``: inserts of rows that refer to a
    locked customer (points, deliveries, a referrer's reward) do not wait for it.
    """
    if not customer_ids:
        return []
    if session.get_bind().dialect.name == "sqlite":
        # No row locks: a write takes SQLite's database lock now, not at commit.
        session.execute(update(Customer).where(Customer.id.in_(customer_ids)).values(updated_at=Customer.updated_at))
    return list(
        session.execute(
            select(Customer).where(Customer.id.in_(customer_ids)).order_by(Customer.id).with_for_update(key_share=True)
        ).scalars()
    )


def _known(unit: UnitOfWork, user_id: str) -> Customer | None:
    """:func:`by_external_id`, from the customers :func:`preload` put in ``unit`` if it loaded this one."""
    preloaded = unit.by_user_id.get(user_id)
    if preloaded is not None:  # loaded and locked by preload()
        return _follow(unit.session, preloaded)
    return by_external_id(unit.session, user_id)


def by_external_id(session: Session, user_id: str) -> Customer | None:
    """Return the live customer known by ``user_id``, following merges, locked for update."""
    customer = session.execute(
        select(Customer).where(Customer.external_id == user_id).with_for_update(key_share=True)
    ).scalar_one_or_none()
    return _follow(session, customer)


def by_anonymous_id(session: Session, anonymous_id: str) -> Customer | None:
    """Return the live customer known by ``anonymous_id``, following merges, locked for update."""
    customer = session.execute(
        select(Customer)
        .join(AnonymousId, AnonymousId.customer_id == Customer.id)
        .where(AnonymousId.anonymous_id == anonymous_id)
        .with_for_update(of=Customer, key_share=True)
    ).scalar_one_or_none()
    return _follow(session, customer)


def find(session: Session, ident: str) -> Customer | None:
    """Return the customer known by ``ident``: a user id first, then an anonymous id."""
    return by_external_id(session, ident) or by_anonymous_id(session, ident)


def anonymous_ids(session: Session, customer: Customer) -> list[str]:
    """Return the anonymous ids that lead to ``customer``."""
    return list(
        session.execute(
            select(AnonymousId.anonymous_id)
            .where(AnonymousId.customer_id == customer.id)
            .order_by(AnonymousId.created_at, AnonymousId.anonymous_id)
        ).scalars()
    )


def public_id(session: Session, customer: Customer) -> tuple[str, bool]:
    """How the customer is named to people and providers: (user id, False), else
    (their first anonymous id, True); a row id only for a profile with neither."""
    if customer.external_id:
        return customer.external_id, False
    anonymous = anonymous_ids(session, customer)
    return (anonymous[0] if anonymous else f"#{customer.id}"), True


def describe(session: Session, customer: Customer) -> str:
    """The customer as errors and notes name them: ``customer 'ada'``, ``anonymous customer 'anon-123'``."""
    ident, anonymous = public_id(session, customer)
    return customer_label(ident, anonymous=anonymous)


def _follow(session: Session, customer: Customer | None) -> Customer | None:
    while customer is not None and customer.merged_into_id is not None:
        customer = session.execute(
            select(Customer).where(Customer.id == customer.merged_into_id).with_for_update(key_share=True)
        ).scalar_one()
    return customer


def _create(session: Session, user_id: str | None, anonymous_id: str | None, seen_at: datetime) -> Customer:
    if user_id is not None:
        # Two workers may meet the same new user at once: let the database pick one row.
        session.execute(
            insert_ignore(
                session,
                Customer,
                {
                    "external_id": user_id,
                    "traits": {},
                    "first_seen_at": seen_at,
                    "last_seen_at": seen_at,
                    "updated_at": seen_at,
                },
                ["external_id"],
            )
        )
        customer = by_external_id(session, user_id)
        if customer is None:  # pragma: no cover - the row was inserted just above
            raise RuntimeError(f"customer {user_id!r} vanished after insert")
        return customer
    customer = Customer(traits={}, first_seen_at=seen_at, last_seen_at=seen_at, updated_at=seen_at)
    session.add(customer)
    session.flush()
    if anonymous_id is not None and not _link(session, anonymous_id, customer.id, seen_at):
        # Another worker linked this anonymous id first: use its customer, drop ours.
        session.delete(customer)
        session.flush()
        existing = by_anonymous_id(session, anonymous_id)
        if existing is None:  # pragma: no cover - the link exists, so does its customer
            raise RuntimeError(f"anonymous id {anonymous_id!r} vanished after insert")
        return existing
    return customer


def _link(session: Session, anonymous_id: str, customer_id: int, at: datetime) -> bool:
    result = session.execute(
        insert_ignore(
            session,
            AnonymousId,
            {"anonymous_id": anonymous_id, "customer_id": customer_id, "created_at": at},
            ["anonymous_id"],
        ).returning(AnonymousId.anonymous_id)
    )
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return result.first() is not None


def time_zone_after(event_type: str, traits: Mapping[str, Any] | None, context: Mapping[str, Any] | None,
                    current: str | None) -> str | None:
    """The customer's time zone after an event: an identify's ``timezone`` trait, else the
    event context's while none is known yet, else ``current`` (a name that is not a zone is ignored)."""
    zone = _zone((traits or {}).get("timezone")) if event_type == "identify" else None
    if zone is None and current is None:
        zone = _zone((context or {}).get("timezone"))
    return zone if zone is not None else current


def _zone(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return value
