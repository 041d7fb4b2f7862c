"""Shared fixtures.

Services: a test that needs PostgreSQL or Redis skips on a laptop without them and fails
when CI=true. Every run makes its own PostgreSQL database and claims an empty Redis
database number, so it never touches data another process uses.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings
from tests.databases import claimed_redis, fresh_database


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_database("test", migrate=False) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """redis://.../<n> for a database number no one else is using (claimed with a marker key)."""
    with claimed_redis("session") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    from app.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'mjq.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """Settings for unit tests: SQLite in a temp dir, instant simulator."""
    return Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path), sim_job_seconds=0.0,
                             public_url="http://mjq.test")
