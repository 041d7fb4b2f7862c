"""A worker opens its connections when it starts, and still starts when a service is down."""
from __future__ import annotations

import logging
import socket
from types import SimpleNamespace

import pytest

from config import Settings
from workers import runtime as runtime_module
from workers.runtime import build_runtime, warm_up, warm_up_on_ready


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_warm_up_opens_a_database_connection_before_the_first_job(tmp_path):
    settings = Settings.from_env({"DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
                                  "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"})
    runtime = build_runtime(settings)
    engine = runtime.session_factory.kw["bind"]
    assert engine.pool.checkedin() == 0
    warm_up(runtime)
    assert engine.pool.checkedin() == 1  # the first job reuses it instead of connecting


def test_a_worker_starts_when_postgres_and_redis_are_down_and_says_so(caplog):
    settings = Settings.from_env({"DATABASE_URL": f"postgresql://root@127.0.0.1:{_closed_port()}/nothing",
                                  "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"})
    with caplog.at_level(logging.WARNING, logger="workers.runtime"):
        warm_up(build_runtime(settings))
    text = caplog.text
    assert "database not reachable yet" in text and "Redis not reachable yet" in text


class _Prefork:  # stands in for celery.concurrency.prefork.TaskPool
    pass


_Prefork.__module__ = "celery.concurrency.prefork"


def test_a_prefork_parent_opens_nothing(monkeypatch: pytest.MonkeyPatch):
    """Children would inherit the parent's sockets: only a threads or solo worker warms up."""
    monkeypatch.setattr(runtime_module, "get_runtime", lambda: pytest.fail("a prefork parent built a runtime"))
    warm_up_on_ready(SimpleNamespace(pool=_Prefork()))
