"""Database plumbing shared by the web app and the workers.

The models are plain SQLAlchemy 2.0 classes on `Base`; Flask-SQLAlchemy wraps the same
metadata for the web app, and workers build their own engine with `make_engine`, so the
executor runs (and is tested) without a Flask app.
"""
from __future__ import annotations

import sqlite3
import time
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from sqlalchemy.pool import Pool

from config.settings import normalize_database_url

#: PostgreSQL connect timeout: the API must answer 503 within 5 s when the database is down.
PG_CONNECT_TIMEOUT_SECONDS = 3
#: No statement may run longer than this on PostgreSQL (milliseconds): a stuck query fails, never hangs.
PG_STATEMENT_TIMEOUT_MS = 30_000
#: A pooled PostgreSQL connection idle longer than this (seconds) is pinged before it is handed out; one
#: used more recently is handed out as it is. A server that died within that second fails the next
#: statement instead: SQLAlchemy sees the disconnect and replaces the pool's connections, and the caller
#: gets the usual outage answer (503, or a retried job).
PING_IDLE_SECONDS = 1.0
#: SQLite waits this long for a write lock held by another process before failing.
SQLITE_BUSY_TIMEOUT_SECONDS = 30


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


def engine_options(url: str, pool_size: int = 10, pool_timeout: float = PG_CONNECT_TIMEOUT_SECONDS
                   ) -> dict[str, Any]:
    """create_engine keyword arguments for `url` (the same for the app and the workers).

    `pool_timeout`: seconds a caller waits for a pooled connection. The API keeps it short (a request
    answers 503 within 5 s when PostgreSQL is gone); a worker of hundreds of threads waits longer
    (WORKER_POOL_TIMEOUT_SECONDS): a busy pool is not an outage, and each wait holds only its own thread.
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    return {
        # No pool_pre_ping: it pings on every checkout (a round trip per session: ~18 % of a worker's samples
        # under bench P3); _ping_idle_connections below pings only connections idle long enough to be stale.
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_timeout": pool_timeout,
        # Keepalives notice a server that vanished without closing the socket, so no request hangs on it.
        "connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS, "application_name": "mjq",
                         "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
                         "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"},
    }


def make_engine(url: str, pool_size: int = 10, pool_timeout: float = PG_CONNECT_TIMEOUT_SECONDS) -> Engine:
    """An engine for `url` with mjq's pool and timeout choices."""
    url = normalize_database_url(url)
    return create_engine(url, **engine_options(url, pool_size, pool_timeout))


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web process read while a worker writes; the embedded default has several processes.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()


@event.listens_for(Pool, "checkin")
def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["mjq_idle_since"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_idle_connections(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """SQLAlchemy's pessimistic disconnect check, only for connections idle past PING_IDLE_SECONDS.

    Raising DisconnectionError makes the pool drop this connection and hand out another (up to 3 tries).
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        return
    idle_since = record.info.get("mjq_idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
        return  # new, or used a moment ago
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as exc:  # noqa: BLE001 - any failure of the ping means this connection is not usable
        raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc
