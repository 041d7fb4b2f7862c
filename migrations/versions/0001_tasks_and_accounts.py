"""tasks and accounts

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('driver', sa.String(length=16), nullable=False),
    sa.Column('settings', JSON, nullable=False),
    sa.Column('modes', JSON, nullable=False),
    sa.Column('fast_concurrency', sa.Integer(), nullable=False),
    sa.Column('relax_concurrency', sa.Integer(), nullable=False),
    sa.Column('queue_size', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.Column('remix', sa.Boolean(), nullable=False),
    sa.Column('bot_types', JSON, nullable=False),
    sa.Column('timeout_minutes', sa.Integer(), nullable=False),
    sa.Column('enable', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('tasks',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=True),
    sa.Column('prompt_en', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('state', sa.Text(), nullable=True),
    sa.Column('submit_time', sa.BigInteger(), nullable=False),
    sa.Column('start_time', sa.BigInteger(), nullable=True),
    sa.Column('finish_time', sa.BigInteger(), nullable=True),
    sa.Column('image_url', sa.Text(), nullable=True),
    sa.Column('progress', sa.String(length=16), nullable=True),
    sa.Column('fail_reason', sa.Text(), nullable=True),
    sa.Column('properties', JSON, nullable=False),
    sa.Column('buttons', JSON, nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('bot_type', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=True),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('parent_id', sa.BigInteger(), nullable=True),
    sa.Column('notify_hook', sa.Text(), nullable=True),
    sa.Column('inputs', JSON, nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('upstream_id', sa.String(length=128), nullable=True),
    sa.Column('upstream_state', sa.String(length=16), nullable=True),
    sa.Column('enqueued_at', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_owner_id', ['owner', 'id'], unique=False)
        batch_op.create_index('ix_tasks_status_submit_time', ['status', 'submit_time'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_status_submit_time')
        batch_op.drop_index('ix_tasks_owner_id')

    op.drop_table('tasks')
    op.drop_table('accounts')
