"""The engine's tables, as typed SQLAlchemy models.

The schema is created and changed only by the Alembic migrations in ``migrations/``;
these models describe it for queries. A test checks that the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    Index,
    MetaData,
    String,
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
    """A key that apps (write) or operators (admin) present to the API.

    Only the SHA-256 hash of the key is stored; the key itself is shown once when created.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
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
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    stage: Mapped[str | None] = mapped_column(String(32), default=None)
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

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
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
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), default=None)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
