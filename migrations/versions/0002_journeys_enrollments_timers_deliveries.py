"""journeys, enrollments, timers, deliveries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Column types as the models declare them (see engine/storage/types.py).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table('applied_effects',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('enrollment_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_applied_effects'))
    )
    with op.batch_alter_table('applied_effects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_applied_effects_enrollment_id'), ['enrollment_id'], unique=False)

    op.create_table('journeys',
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journeys'))
    )
    op.create_table('journey_versions',
    sa.Column('id', ID, nullable=False),
    sa.Column('journey_id', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('templates', JSON, nullable=False),
    sa.Column('trigger_event', sa.String(length=255), nullable=True),
    sa.Column('deployed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['journey_id'], ['journeys.id'], name=op.f('fk_journey_versions_journey_id_journeys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journey_versions')),
    sa.UniqueConstraint('journey_id', 'version', name=op.f('uq_journey_versions_journey_id_version'))
    )
    op.create_table('points_ledger',
    sa.Column('id', ID, nullable=False),
    sa.Column('customer_id', ID, nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_points_ledger_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_ledger')),
    sa.UniqueConstraint('key', name=op.f('uq_points_ledger_key'))
    )
    with op.batch_alter_table('points_ledger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_ledger_customer_id'), ['customer_id'], unique=False)

    op.create_table('referral_codes',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('customer_id', ID, nullable=False),
    sa.Column('program', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_referral_codes_customer_id_customers')),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_referral_codes')),
    sa.UniqueConstraint('customer_id', 'program', name=op.f('uq_referral_codes_customer_id_program'))
    )
    op.create_table('enrollments',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('journey_id', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('customer_id', ID, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=100), nullable=True),
    sa.Column('waiting_event', sa.String(length=255), nullable=True),
    sa.Column('state', JSON, nullable=False),
    sa.Column('trigger_event_id', ID, nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_enrollments_customer_id_customers')),
    sa.ForeignKeyConstraint(['journey_id'], ['journeys.id'], name=op.f('fk_enrollments_journey_id_journeys')),
    sa.ForeignKeyConstraint(['trigger_event_id'], ['events.id'], name=op.f('fk_enrollments_trigger_event_id_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollments'))
    )
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.create_index('ix_enrollments_customer_id_status', ['customer_id', 'status'], unique=False)
        batch_op.create_index('ix_enrollments_journey_id_status_step', ['journey_id', 'status', 'step'], unique=False)

    op.create_table('referrals',
    sa.Column('referred_id', ID, nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('referrer_id', ID, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('converted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['code'], ['referral_codes.code'], name=op.f('fk_referrals_code_referral_codes')),
    sa.ForeignKeyConstraint(['referred_id'], ['customers.id'], name=op.f('fk_referrals_referred_id_customers')),
    sa.ForeignKeyConstraint(['referrer_id'], ['customers.id'], name=op.f('fk_referrals_referrer_id_customers')),
    sa.PrimaryKeyConstraint('referred_id', name=op.f('pk_referrals'))
    )
    op.create_table('deliveries',
    sa.Column('id', ID, nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('enrollment_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', ID, nullable=False),
    sa.Column('journey_id', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=100), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('template', sa.String(length=100), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=100), nullable=True),
    sa.Column('content', JSON, nullable=False),
    sa.Column('variables', JSON, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.String(length=255), nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.Column('rendered', JSON, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_deliveries_customer_id_customers')),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], name=op.f('fk_deliveries_enrollment_id_enrollments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('key', name=op.f('uq_deliveries_key'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_customer_id_created_at', ['customer_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_enrollment_id'), ['enrollment_id'], unique=False)
        batch_op.create_index('ix_deliveries_pending', ['created_at'], unique=False,
                              postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))

    op.create_table('timers',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('enrollment_id', sa.String(length=64), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fired_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], name=op.f('fk_timers_enrollment_id_enrollments')),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_timers'))
    )
    with op.batch_alter_table('timers', schema=None) as batch_op:
        batch_op.create_index('ix_timers_due', ['due_at'], unique=False,
                              postgresql_where=sa.text('fired_at IS NULL'), sqlite_where=sa.text('fired_at IS NULL'))
        batch_op.create_index(batch_op.f('ix_timers_enrollment_id'), ['enrollment_id'], unique=False)

    op.create_table('trace',
    sa.Column('id', ID, nullable=False),
    sa.Column('enrollment_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('step', sa.String(length=100), nullable=True),
    sa.Column('what', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.String(length=1000), nullable=True),
    sa.Column('value', JSON, nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], name=op.f('fk_trace_enrollment_id_enrollments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trace'))
    )
    with op.batch_alter_table('trace', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trace_enrollment_id'), ['enrollment_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('trace', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trace_enrollment_id'))

    op.drop_table('trace')
    with op.batch_alter_table('timers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_timers_enrollment_id'))
        batch_op.drop_index('ix_timers_due', postgresql_where=sa.text('fired_at IS NULL'), sqlite_where=sa.text('fired_at IS NULL'))

    op.drop_table('timers')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_pending', postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
        batch_op.drop_index(batch_op.f('ix_deliveries_enrollment_id'))
        batch_op.drop_index('ix_deliveries_customer_id_created_at')

    op.drop_table('deliveries')
    op.drop_table('referrals')
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollments_journey_id_status_step')
        batch_op.drop_index('ix_enrollments_customer_id_status')

    op.drop_table('enrollments')
    op.drop_table('referral_codes')
    with op.batch_alter_table('points_ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_points_ledger_customer_id'))

    op.drop_table('points_ledger')
    op.drop_table('journey_versions')
    op.drop_table('journeys')
    with op.batch_alter_table('applied_effects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_applied_effects_enrollment_id'))

    op.drop_table('applied_effects')
