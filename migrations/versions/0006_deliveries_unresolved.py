"""deliveries: ix_deliveries_unresolved, the rows claimed, being sent or unknown (the sweeper's and operators' view)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Written out, not imported from the models: a migration stays what it was when written.
UNRESOLVED = sa.text("status IN ('claimed', 'sending', 'unknown')")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_unresolved", ["status", "updated_at"], unique=False,
                              postgresql_where=UNRESOLVED, sqlite_where=UNRESOLVED)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_unresolved", postgresql_where=UNRESOLVED, sqlite_where=UNRESOLVED)
