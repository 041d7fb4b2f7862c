"""Isolated services for tests that run a whole stack of their own: a fresh PostgreSQL database
and an empty Redis database number, claimed the way tests/conftest.py claims the session's.

Both skip (or fail with CI=true) when the service is missing, and clean up on exit.
"""
from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import pytest
import redis as redis_lib

from app.migrate import upgrade

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("MJQ_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("MJQ_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: Redis database numbers tests may claim (0 is left to whatever else runs on the machine).
REDIS_TEST_DBS = range(15, 4, -1)
REDIS_CLAIM_KEY = "mjq:test:claimed-by"


def service_missing(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc}); start it, or run `make run` for a private Redis"
    if IN_CI:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def _run_as_admin(admin_url: str, statement: str) -> None:
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def create_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE `name` on the server `admin_url` points at; returns the new database's URL."""
    _run_as_admin(admin_url, f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE `name`, closing its sessions; a server that is already gone is not an error."""
    try:
        _run_as_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg2.Error:
        pass


@contextmanager
def fresh_database(label: str, migrate: bool = True) -> Iterator[str]:
    """The URL of a new PostgreSQL database `mjq_<label>_…` (migrated unless told not), dropped afterwards."""
    name = f"mjq_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        url = create_database(PG_ADMIN_URL, name)
    except psycopg2.OperationalError as exc:
        service_missing("PostgreSQL", exc)
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        drop_database(PG_ADMIN_URL, name)


@contextmanager
def claimed_redis(label: str) -> Iterator[str]:
    """redis://…/<n> for an empty database number no one else uses (a marker key claims it), flushed afterwards."""
    token = f"{os.getpid()}-{label}-{uuid.uuid4()}"
    for db in REDIS_TEST_DBS:
        client = redis_lib.Redis.from_url(f"{REDIS_BASE_URL}/{db}", socket_connect_timeout=3)
        try:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, token, nx=True):
                break
        except redis_lib.RedisError as exc:
            service_missing("Redis", exc)
        client.close()
    else:
        pytest.fail(f"no empty Redis database number to claim for {label}")
    try:
        yield f"{REDIS_BASE_URL}/{db}"
    finally:
        client.flushdb()
        client.close()
