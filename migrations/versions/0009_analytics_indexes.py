"""indexes for journey stats and the stage funnel: a journey's cohort by start, the trace by
enrollment and step, stage changes by time, customers by stage

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_enrollments_journey_id_started_at", "enrollments", ["journey_id", "started_at"])
    op.create_index("ix_trace_enrollment_id_step_what", "trace", ["enrollment_id", "step", "what"])
    op.create_index("ix_stage_changes_at", "stage_changes", ["at"])
    op.create_index("ix_customers_stage", "customers", ["stage"])


def downgrade() -> None:
    op.drop_index("ix_customers_stage", "customers")
    op.drop_index("ix_stage_changes_at", "stage_changes")
    op.drop_index("ix_trace_enrollment_id_step_what", "trace")
    op.drop_index("ix_enrollments_journey_id_started_at", "enrollments")
