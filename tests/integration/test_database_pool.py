"""Pooled PostgreSQL connections: pinged only when idle long enough to have gone stale (app/db.py)."""
from __future__ import annotations

import time

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import PING_IDLE_SECONDS, make_engine
from tests.databases import PG_ADMIN_URL

pytestmark = pytest.mark.integration


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pid: int) -> None:
    conn = psycopg2.connect(PG_ADMIN_URL)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        conn.close()


@pytest.fixture
def engine(pg_url):
    engine = make_engine(pg_url, pool_size=1)
    yield engine
    engine.dispose()


def test_a_pooled_connection_killed_while_idle_is_replaced_before_anyone_uses_it(engine):
    first = backend_pid(engine)
    terminate(first)
    time.sleep(PING_IDLE_SECONDS + 0.3)
    assert backend_pid(engine) != first  # the ping found it dead: no statement failed


def test_a_connection_killed_right_after_use_fails_one_statement_and_the_pool_recovers(engine):
    first = backend_pid(engine)
    terminate(first)
    time.sleep(0.1)  # the server is gone before the next checkout, which does not ping
    with pytest.raises(DBAPIError) as failed:
        backend_pid(engine)
    assert failed.value.connection_invalidated
    assert backend_pid(engine) != first
