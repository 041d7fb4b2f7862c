"""image mode per API key and per task

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Per-key webhook secrets need no schema: they are rows of `webhook_secrets` with the key's id as
scope. Keys made before this revision get theirs on first use (a delivery or GET /mj/webhook-secret),
encrypted by the process that makes it; a migration cannot encrypt (it has no MJQ_SECRET_KEY).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('image_mode', sa.String(length=8), server_default='relay', nullable=False))
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('image_mode', sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.drop_column('image_mode')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('image_mode')
