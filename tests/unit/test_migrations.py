"""The migrations build exactly the schema the models describe (on SQLite here; PostgreSQL in integration)."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app import models, models_tenancy  # noqa: F401 - every table on Base.metadata
from app.db import Base, make_engine


def schema_drift(url: str) -> list:
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    return diff


def test_the_migrated_sqlite_schema_matches_the_models(sqlite_url):
    assert schema_drift(sqlite_url) == []
