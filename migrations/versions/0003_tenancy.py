"""api keys, billing ledger, idempotency records, encrypted account secrets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'api_keys',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('key_hash', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=8), nullable=False),
        sa.Column('plan', sa.String(length=32), nullable=False),
        sa.Column('balance', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.Column('revoked_at', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key_hash'),
    )
    op.create_table(
        'ledger',
        sa.Column('id', AUTO_ID, autoincrement=True, nullable=False),
        sa.Column('key_id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('task_id', sa.BigInteger(), nullable=True),
        sa.Column('action', sa.String(length=32), nullable=True),
        sa.Column('mode', sa.String(length=8), nullable=True),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('kind', 'task_id', name='uq_ledger_kind_task'),
    )
    op.create_index('ix_ledger_key_created', 'ledger', ['key_id', 'created_at'])
    op.create_table(
        'idempotency_keys',
        sa.Column('owner', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('body_hash', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=8), nullable=False),
        sa.Column('response', JSON, nullable=True),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('owner', 'key'),
    )
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('secrets', sa.Text(), nullable=True))
    with op.batch_alter_table('tasks') as batch:
        batch.create_index('ix_tasks_owner_status', ['owner', 'status'])


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.drop_index('ix_tasks_owner_status')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('secrets')
    op.drop_table('idempotency_keys')
    op.drop_index('ix_ledger_key_created', table_name='ledger')
    op.drop_table('ledger')
    op.drop_table('api_keys')
