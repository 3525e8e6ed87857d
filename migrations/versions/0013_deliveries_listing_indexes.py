"""deliveries indexed by creation time (the lists' time window) and by enrollment, step and
status (journey stats' deliveries per step, from the index alone; it replaces the index by
enrollment)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_created_at", "deliveries", ["created_at"])
    op.create_index("ix_deliveries_enrollment_id_step_status", "deliveries", ["enrollment_id", "step", "status"])
    op.drop_index("ix_deliveries_enrollment_id", "deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_enrollment_id", "deliveries", ["enrollment_id"])
    op.drop_index("ix_deliveries_enrollment_id_step_status", "deliveries")
    op.drop_index("ix_deliveries_created_at", "deliveries")
