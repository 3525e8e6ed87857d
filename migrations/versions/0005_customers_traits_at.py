"""customers.traits_at, traits_event_id: which identify last set the traits, so identifies apply newest-last

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Column types as the models declare them (see engine/storage/types.py).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traits_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("traits_event_id", ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("traits_event_id")
        batch_op.drop_column("traits_at")
