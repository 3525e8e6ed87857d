"""console_sessions: the web console's signed-in operators; deliveries' sent_at indexed for its chart

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Column types as the models declare them (see engine/storage/types.py).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SENT = "sent_at IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", ID, nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_console_sessions_key_id_api_keys")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_index("ix_console_sessions_key_id", "console_sessions", ["key_id"])
    # The console's chart: deliveries sent per minute over the last hour, a range of this index.
    op.create_index("ix_deliveries_sent_at", "deliveries", ["sent_at"],
                    postgresql_where=sa.text(SENT), sqlite_where=sa.text(SENT))


def downgrade() -> None:
    op.drop_index("ix_deliveries_sent_at", "deliveries")
    op.drop_index("ix_console_sessions_key_id", "console_sessions")
    op.drop_index("ix_console_sessions_expires_at", "console_sessions")
    op.drop_table("console_sessions")
