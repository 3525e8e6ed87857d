"""suppressions: one entry per channel and address, and per channel and customer

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# An address entry is identified by (channel, address); a customer entry, which has no
# address, by (channel, customer_id). Adding one twice (a provider's retried bounce
# webhook, two bounces at once) finds the first.
CUSTOMER_ENTRY = sa.text("address IS NULL")


def upgrade() -> None:
    # Entries added twice before this revision: keep the oldest of each.
    op.execute(
        "DELETE FROM suppressions WHERE address IS NOT NULL AND EXISTS (SELECT 1 FROM suppressions AS older"
        " WHERE older.channel = suppressions.channel AND older.address = suppressions.address"
        " AND older.id < suppressions.id)"
    )
    op.execute(
        "DELETE FROM suppressions WHERE address IS NULL AND EXISTS (SELECT 1 FROM suppressions AS older"
        " WHERE older.address IS NULL AND older.channel = suppressions.channel"
        " AND older.customer_id = suppressions.customer_id AND older.id < suppressions.id)"
    )
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_index('ix_suppressions_channel_address')
        batch_op.create_index('uq_suppressions_channel_address', ['channel', 'address'], unique=True)
        batch_op.create_index('uq_suppressions_channel_customer_id', ['channel', 'customer_id'], unique=True,
                              sqlite_where=CUSTOMER_ENTRY, postgresql_where=CUSTOMER_ENTRY)


def downgrade() -> None:
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_index('uq_suppressions_channel_customer_id')
        batch_op.drop_index('uq_suppressions_channel_address')
        batch_op.create_index('ix_suppressions_channel_address', ['channel', 'address'], unique=False)
