"""No foreign keys on the append-only rows the event path writes most: trace, stage
changes, points, turn-aways, and the two write-once references of enrollments and events

Each of these keys cost a lookup (and a ``FOR KEY SHARE`` lock on the row referred to) per
row inserted or moved, about six per event, and protected against nothing the engine does:
it never deletes a customer that has rows (a profile merge moves them and keeps the
merged-away customer), an enrollment, or an event. The references stay indexed where
they were. Kept: the keys of rows the engine updates and joins on (enrollments' customer
and journey, deliveries, timers, anonymous ids, referrals, consents, suppressions).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# (table, column, table referred to): named fk_<table>_<column>_<referred> (engine/storage/models.py NAMING).
DROPPED = (
    ("trace", "enrollment_id", "enrollments"),
    ("stage_changes", "customer_id", "customers"),
    ("points_ledger", "customer_id", "customers"),
    ("turn_aways", "customer_id", "customers"),
    ("enrollments", "trigger_event_id", "events"),
    ("events", "customer_id", "customers"),
)


def upgrade() -> None:
    for table, column, referred in DROPPED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_{column}_{referred}", type_="foreignkey")


def downgrade() -> None:
    for table, column, referred in DROPPED:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(f"fk_{table}_{column}_{referred}", referred, [column], ["id"])
