"""The engine's tables, as typed SQLAlchemy models.

The schema is created and changed only by the Alembic migrations in ``migrations/``;
these models describe it for queries. A test checks that the two agree.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine.storage.types import BigId, Json, UTCDateTime

# Named constraints, so migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every model."""

    metadata = MetaData(naming_convention=NAMING)


class ApiKey(Base):
    """A key that apps (``write``) or operators (``admin``, or ``read``: look, not act) present to the API.

    Only the SHA-256 hash of the key is stored; the key itself is shown once when created.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8), default="write")  # write | read | admin
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Customer(Base):
    """A person the engine knows, by user id, anonymous ids or both.

    ``merged_into_id`` is set on an anonymous profile that was merged into a known one
    (by ``alias`` or by an ``identify`` bringing a user id); the row stays so that old
    references can be followed.
    """

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    traits: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: the timestamp and id of the identify whose traits were applied last (the newest)
    traits_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    traits_event_id: Mapped[int | None] = mapped_column(BigId, default=None)
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    stage: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    stage_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id"), default=None, index=True
    )
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AnonymousId(Base):
    """An anonymous id (a device, a browser) and the customer it belongs to."""

    __tablename__ = "anonymous_ids"

    anonymous_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StageChange(Base):
    """One move of a customer from one lifecycle stage to another, with its cause."""

    __tablename__ = "stage_changes"
    __table_args__ = (Index("ix_stage_changes_at", "at"),)  # the stage funnel's moves in a window

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigId, index=True)
    from_stage: Mapped[str | None] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(255))


class Event(Base):
    """One accepted Segment-format message, stored before it is acknowledged.

    ``processed_at`` stays empty until a worker has applied the event; the scheduler's
    sweeper finds rows that stayed unprocessed too long (their queue message was lost)
    and enqueues them again, so losing Redis loses nothing.
    """

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "message_id"),
        Index(
            "ix_events_pending",
            "received_at",
            postgresql_where=text("processed_at IS NULL"),
            sqlite_where=text("processed_at IS NULL"),
        ),
        Index("ix_events_customer_id_timestamp", "customer_id", "timestamp"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    event: Mapped[str | None] = mapped_column(String(255), default=None)
    name: Mapped[str | None] = mapped_column(String(255), default=None)
    user_id: Mapped[str | None] = mapped_column(String(255), default=None)
    anonymous_id: Mapped[str | None] = mapped_column(String(255), default=None)
    previous_id: Mapped[str | None] = mapped_column(String(255), default=None)
    group_id: Mapped[str | None] = mapped_column(String(255), default=None)
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    traits: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    integrations: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    original_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    customer_id: Mapped[int | None] = mapped_column(BigId, default=None)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    #: an operator gave up on it (it kept failing): ``processed_at`` is set too, so nothing applies it
    dropped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    dropped_by: Mapped[str | None] = mapped_column(String(200), default=None)


class JourneyRecord(Base):
    """A journey known to the engine: its current deployed version and whether it runs."""

    __tablename__ = "journeys"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    current_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused | archived
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JourneyVersion(Base):
    """One deployed version of a journey: its file and templates, exactly as deployed.

    Workers load journeys from here, never from the files, so every process runs the
    same version and enrollments keep running the version they started on.
    """

    __tablename__ = "journey_versions"
    __table_args__ = (UniqueConstraint("journey_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    journey_id: Mapped[str] = mapped_column(ForeignKey("journeys.id"))
    version: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    templates: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    trigger_event: Mapped[str | None] = mapped_column(String(255), default=None)
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Enrollment(Base):
    """One customer's run through one version of a journey.

    ``state`` is the runtime's serialized state; the other columns repeat what queries
    need (who, where, what it waits for) so they can be indexed.
    """

    __tablename__ = "enrollments"
    __table_args__ = (
        Index("ix_enrollments_customer_id_status", "customer_id", "status"),
        # Entry rules read each customer's latest enrollment in a journey: one probe, whatever the history.
        Index("ix_enrollments_customer_id_journey_id_started_at", "customer_id", "journey_id", "started_at", "id"),
        Index("ix_enrollments_journey_id_status_step", "journey_id", "status", "step"),
        # The cohort of journey stats: a journey's enrollments that started in a window.
        Index("ix_enrollments_journey_id_started_at", "journey_id", "started_at"),
        # Journey stats' waiting customers: per step, the oldest and the median wait, from the index alone.
        Index("ix_enrollments_waiting", "journey_id", "step", "updated_at", "started_at",
              postgresql_where=text("status = 'active'"), sqlite_where=text("status = 'active'")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(ForeignKey("journeys.id"))
    version: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[str | None] = mapped_column(String(100), default=None)
    waiting_event: Mapped[str | None] = mapped_column(String(255), default=None)
    state: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    trigger_event_id: Mapped[int | None] = mapped_column(BigId, default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When the customer reached the goal after the enrollment ended without converting
    # (a holdout's), within the goal's conversion window: it counts as converted.
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Timer(Base):
    """A wake-up for an enrollment at ``due_at``; the scheduler claims due ones.

    ``key`` is the runtime's idempotency key, so scheduling the same timer twice is one row
    and firing it twice is noticed.
    """

    __tablename__ = "timers"
    __table_args__ = (
        Index(
            "ix_timers_due",
            "due_at",
            postgresql_where=text("fired_at IS NULL"),
            sqlite_where=text("fired_at IS NULL"),
        ),
    )

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(ForeignKey("enrollments.id"), index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


#: Every status a delivery can have (see :class:`Delivery`).
DELIVERY_STATUSES = ("pending", "claimed", "sending", "sent", "failed", "held", "dead", "unknown", "dropped")
#: Deliveries a worker holds (``claimed``, ``sending``) or left for an operator (``unknown``).
UNRESOLVED_WHERE = "status IN ('claimed', 'sending', 'unknown')"


class Delivery(Base):
    """A message to send: written with the state change that caused it (an outbox).

    Status: ``pending`` (written, not yet claimed), ``claimed`` (a worker took it and is
    preparing it: not handed to an adapter yet), ``sending`` (the adapter is being
    called), ``sent``, ``failed`` (permanent), ``held`` (a policy held it back; ``error``
    says why), ``dead`` (retries exhausted), ``unknown`` (a worker died while sending: an
    operator decides, unless the provider deduplicates on the key; it is never sent again
    silently), ``dropped`` (an operator gave up on it: ``dropped_at``, ``dropped_by``).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index(
            "ix_deliveries_pending",
            "created_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_deliveries_customer_id_created_at", "customer_id", "created_at"),
        # The few rows a worker holds or left behind: the sweeper and the operators' list of unknowns.
        Index(
            "ix_deliveries_unresolved",
            "status",
            "updated_at",
            postgresql_where=text(UNRESOLVED_WHERE),
            sqlite_where=text(UNRESOLVED_WHERE),
        ),
        # The operators' lists and bulk actions by status (dead, failed, held...), paged by id.
        Index("ix_deliveries_status_id", "status", "id"),
        # Journey stats: a journey's deliveries by step and status (from the index alone on
        # PostgreSQL), and the reasons of the held ones.
        Index("ix_deliveries_journey_id_created_at", "journey_id", "created_at",
              postgresql_include=["version", "step", "status"]),
        Index("ix_deliveries_held", "journey_id", "created_at",
              postgresql_where=text("status = 'held'"), sqlite_where=text("status = 'held'")),
        # The lists' time window (since, until): the window's rows, sorted by id (engine.deliveries.list_deliveries).
        Index("ix_deliveries_created_at", "created_at"),
        # The console's chart: deliveries sent per minute over the last hour.
        Index("ix_deliveries_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL"),
              sqlite_where=text("sent_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    enrollment_id: Mapped[str] = mapped_column(ForeignKey("enrollments.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    journey_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(32))
    template: Mapped[str | None] = mapped_column(String(100), default=None)
    kind: Mapped[str] = mapped_column(String(16), default="marketing")
    topic: Mapped[str | None] = mapped_column(String(100), default=None)
    content: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    variables: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_id: Mapped[str | None] = mapped_column(String(255), default=None)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    rendered: Mapped[dict[str, Any] | None] = mapped_column(Json, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    #: a policy deferred it (quiet hours): the scheduler enqueues it again at this time
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    #: when the policy let it through; frequency caps count the deliveries cleared
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    #: an operator gave up on it (status ``dropped``): when, and who (``cli:<user>``, ``key <id> <name>``)
    dropped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    dropped_by: Mapped[str | None] = mapped_column(String(200), default=None)


class AppliedEffect(Base):
    """The idempotency key of every profile effect applied (traits, stage, points, codes).

    Inserted in the same transaction as the effect: a second attempt finds the key and
    applies nothing.
    """

    __tablename__ = "applied_effects"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    enrollment_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class PointsEntry(Base):
    """One line of a customer's loyalty points ledger; the balance is their sum."""

    __tablename__ = "points_ledger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigId, index=True)
    amount: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReferralCode(Base):
    """A customer's referral code for a program (one per customer per program)."""

    __tablename__ = "referral_codes"
    __table_args__ = (UniqueConstraint("customer_id", "program"),)

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    program: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Referral(Base):
    """Who referred whom: a referred customer is attributed to one code."""

    __tablename__ = "referrals"

    referred_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    code: Mapped[str] = mapped_column(ForeignKey("referral_codes.code"))
    referrer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class TraceEntry(Base):
    """One thing an enrollment did or decided, for ``journey trace``: a step entered, a
    condition's value, a wait, a delivery's outcome, an exit."""

    __tablename__ = "trace"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    step: Mapped[str | None] = mapped_column(String(100), default=None)
    what: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(1000), default=None)
    value: Mapped[Any | None] = mapped_column(Json, default=None)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)


class NotEnteredCount(Base):
    """How many times a journey version turned a customer away, by reason and UTC day
    (``journey stats``' ``not_entered``), counted in the transaction that turned them away."""

    __tablename__ = "not_entered_counts"

    journey_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class JourneyCount(Base):
    """A count of journey stats (:mod:`engine.counters`): of a journey version's enrollments
    that started on ``day`` (UTC), how many did ``what`` (entered, visited ``step``, ended...),
    added up in the transactions that wrote their trace; concurrent writers add to their own ``shard``."""

    __tablename__ = "journey_counts"

    journey_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    step: Mapped[str] = mapped_column(String(100), primary_key=True)
    what: Mapped[str] = mapped_column(String(32), primary_key=True)
    detail: Mapped[str] = mapped_column(String(400), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class TurnAway(Base):
    """One customer an event reached but a journey turned away, and why, for ``journey trace``.

    Only the latest :data:`engine.orchestrator.TURN_AWAYS_KEPT` per customer are kept.
    ``key`` (journey and event) makes applying the same event twice record it once.
    """

    __tablename__ = "turn_aways"
    __table_args__ = (Index("ix_turn_aways_customer_id_id", "customer_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[int] = mapped_column(BigId)
    journey_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str | None] = mapped_column(String(255), default=None)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(1000), default=None)
    value: Mapped[Any | None] = mapped_column(Json, default=None)


class Consent(Base):
    """A customer's latest choice for one channel and topic (``*``: every topic).

    No row means no choice was recorded: marketing is allowed. A topic's own row wins
    over the channel's ``*`` row.
    """

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("customer_id", "channel", "topic"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    channel: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(100))
    subscribed: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(100))


class Suppression(Base):
    """An address or a customer that a channel never sends to, marketing or not.

    ``channel`` ``*`` suppresses every channel. Reason: ``hard_bounce``, ``complaint``
    or ``manual``. One entry per channel and address; an entry without an address is
    one per channel and customer.
    """

    __tablename__ = "suppressions"
    __table_args__ = (
        Index("uq_suppressions_channel_address", "channel", "address", unique=True),
        Index("uq_suppressions_channel_customer_id", "channel", "customer_id", unique=True,
              sqlite_where=text("address IS NULL"), postgresql_where=text("address IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    address: Mapped[str | None] = mapped_column(String(255), default=None)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), default=None, index=True)
    reason: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(String(1000), default=None)


class AuditEntry(Base):
    """One operator action (retry, drop, resend, mark sent...): who, when, what, on which rows, how many.

    ``actor`` names a key by id, prefix and name (never the key), or ``cli:<os user>``.
    ``selection`` is what the action was given: ``{"ids": [...]}`` or ``{"filter": {...}}``.
    ``acted`` grows with each batch, in the batch's own transaction, so it is exact even
    if the action stopped half-way; ``finished_at`` is set when it is done.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[int | None] = mapped_column(BigId, default=None)
    action: Mapped[str] = mapped_column(String(64))
    selection: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    acted: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Secret(Base):
    """A secret generated for this database (the development default of ``JOURNEY_SECRET``)."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A signed-in operator of the web console (:mod:`engine.console`).

    The browser holds a random token in a cookie; only its SHA-256 is stored. ``csrf`` is
    the synchronizer token every form of the session carries. A session ends at
    ``expires_at``, at sign-out, or at the first request after its key was revoked.
    """

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
