"""operator actions: audit_log; dropped_at/by on deliveries and events; ix_deliveries_status_id; api_keys.scope for .admin

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

# Column types as the models declare them (see engine/storage/types.py).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", ID, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("key_id", ID, nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("selection", JSON, nullable=False),
        sa.Column("acted", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dropped_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dropped_by", sa.String(length=200), nullable=True))
        # The operators' lists and bulk actions by status (dead, failed, held...), paged by id.
        batch_op.create_index("ix_deliveries_status_id", ["status", "id"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dropped_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dropped_by", sa.String(length=200), nullable=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", sa.String(length=8), nullable=False, server_default="write"))
    op.execute("UPDATE api_keys SET scope = 'admin' WHERE admin")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("scope", server_default=None)
        batch_op.drop_column("admin")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    # There is no read kind before: a read key is revoked rather than turned into a write key.
    op.execute("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE scope = 'read' AND revoked_at IS NULL")
    op.execute("UPDATE api_keys SET admin = (scope = 'admin')")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("admin", server_default=None)
        batch_op.drop_column("scope")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("dropped_by")
        batch_op.drop_column("dropped_at")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_id")
        batch_op.drop_column("dropped_by")
        batch_op.drop_column("dropped_at")
    op.drop_table("audit_log")
