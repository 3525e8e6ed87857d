"""why not, recorded: not_entered_counts (turn-aways per journey version, reason and day) and
turn_aways (the latest per customer, for journey trace)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Column types as the models declare them (see engine/storage/types.py).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "not_entered_counts",
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("journey_id", "version", "reason", "day", name=op.f("pk_not_entered_counts")),
    )
    op.create_table(
        "turn_aways",
        sa.Column("id", ID, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.Column("value", JSON, nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_turn_aways_customer_id_customers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_turn_aways")),
        sa.UniqueConstraint("key", name=op.f("uq_turn_aways_key")),
    )
    op.create_index("ix_turn_aways_customer_id_id", "turn_aways", ["customer_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_turn_aways_customer_id_id", "turn_aways")
    op.drop_table("turn_aways")
    op.drop_table("not_entered_counts")
