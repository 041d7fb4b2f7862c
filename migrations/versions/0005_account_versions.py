"""account_versions: a counter every write to `accounts` bumps, for the API's cache of accounts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

A trigger, not the application, bumps it, so a change made by any writer (the admin API, a worker
disabling a banned account, an operator's SQL) reaches every API process's cache of enabled
accounts: the INSERT of each new task returns the version, and a task placed with an older list
is rolled back and placed again (app/services/submit.py).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BUMP = "UPDATE account_versions SET version = version + 1 WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        'account_versions',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.execute("INSERT INTO account_versions (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE FUNCTION mjq_bump_account_version() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN {BUMP}; RETURN NULL; END $$")
        op.execute("CREATE TRIGGER accounts_bump_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                   "ON accounts FOR EACH STATEMENT EXECUTE FUNCTION mjq_bump_account_version()")
    else:  # SQLite has row triggers only
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER accounts_bump_version_{event.lower()} AFTER {event} ON accounts "
                       f"BEGIN {BUMP}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER accounts_bump_version ON accounts")
        op.execute("DROP FUNCTION mjq_bump_account_version()")
    else:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER accounts_bump_version_{event}")
    op.drop_table('account_versions')
