"""journey stats kept as counts: journey_counts, enrollments.converted_at, the indexes stats read;
each customer's latest enrollment in a journey by index

The counts of a database that kept a trace before are recounted from it
(:func:`engine.counters.rebuild`), and the conversions after an enrollment ended (a
holdout's) are found from the goal events as stats found them before: within 30 days of
entering. The trace's index for stats goes: nothing reads the trace that way any more.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journey_counts",
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=False),
        sa.Column("what", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=400), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("journey_id", "version", "day", "step", "what", "detail", "value", "shard",
                                name=op.f("pk_journey_counts")),
    )
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_enrollments_waiting", "enrollments", ["journey_id", "step", "updated_at", "started_at"],
                    postgresql_where=sa.text("status = 'active'"), sqlite_where=sa.text("status = 'active'"))
    op.create_index("ix_deliveries_journey_id_created_at", "deliveries", ["journey_id", "created_at"],
                    postgresql_include=["version", "step", "status"])
    op.create_index("ix_deliveries_held", "deliveries", ["journey_id", "created_at"],
                    postgresql_where=sa.text("status = 'held'"), sqlite_where=sa.text("status = 'held'"))
    op.create_index("ix_enrollments_customer_id_journey_id_started_at", "enrollments",
                    ["customer_id", "journey_id", "started_at", "id"])
    op.drop_index("ix_trace_enrollment_id_step_what", "trace")
    _backfill()


def _backfill() -> None:
    """Conversions after an enrollment ended, then the counts, from the rows already kept."""
    import tempfile
    from pathlib import Path

    from sqlalchemy.orm import Session

    from engine import counters
    from engine.deploy import compile_version

    bind = op.get_bind()
    session = Session(bind=bind)
    journeys = {}
    with tempfile.TemporaryDirectory() as directory:
        for row in bind.execute(sa.text("SELECT journey_id, version, source, templates FROM journey_versions")):
            journeys[(row.journey_id, row.version)] = compile_version(row.journey_id, row.version, row.source,
                                                                       _json(row.templates), Path(directory))
    later = "e.started_at + :window * INTERVAL '1 second'" if bind.dialect.name == "postgresql" else \
        "strftime('%Y-%m-%d %H:%M:%f', e.started_at, '+' || :window || ' seconds')"
    value = "CAST(:value AS jsonb)" if bind.dialect.name == "postgresql" else ":value"
    for (journey_id, version), journey in journeys.items():
        if journey.goal is None:
            continue
        # As stats counted them before: the goal event (its condition not checked) within the window.
        bind.execute(sa.text(f"""
            UPDATE enrollments SET converted_at = (
                SELECT min(ev.timestamp) FROM events ev, enrollments e
                WHERE e.id = enrollments.id AND ev.customer_id = e.customer_id AND ev.type = 'track'
                  AND ev.event = :goal AND ev.timestamp >= e.started_at AND ev.timestamp <= {later})
            WHERE journey_id = :journey AND version = :version AND status NOT IN ('active', 'converted')
        """), {"goal": journey.goal.event, "window": int(journey.goal.within.total_seconds()),
               "journey": journey_id, "version": version})
        bind.execute(sa.text(f"""
            INSERT INTO trace (enrollment_id, at, step, what, detail, value)
            SELECT id, converted_at, step, 'converted', :detail, {value} FROM enrollments
            WHERE journey_id = :journey AND version = :version AND converted_at IS NOT NULL
        """), {"journey": journey_id, "version": version, "value": f'"{journey.goal.event}"',
               "detail": f"{journey.goal.event} arrived after the enrollment ended, within 30 days of entering "
                         "(found when journey stats began to be counted)"})
    counters.rebuild(session, journeys)
    session.flush()


def _json(value: object) -> dict[str, str]:
    """A version's templates: JSON text on SQLite, already decoded on PostgreSQL."""
    if isinstance(value, str):
        return dict(json.loads(value))
    return dict(value or {})  # type: ignore[call-overload]


def downgrade() -> None:
    op.create_index("ix_trace_enrollment_id_step_what", "trace", ["enrollment_id", "step", "what"])
    op.drop_index("ix_enrollments_customer_id_journey_id_started_at", "enrollments")
    op.drop_index("ix_deliveries_held", "deliveries")
    op.drop_index("ix_deliveries_journey_id_created_at", "deliveries")
    op.drop_index("ix_enrollments_waiting", "enrollments")
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("converted_at")
    op.drop_table("journey_counts")
