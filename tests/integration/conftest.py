"""Integration fixtures: a migrated PostgreSQL database, a claimed Redis database, real workers."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import delete

from app.db import make_engine, make_session_factory
from app.migrate import upgrade
from app.models import Task
from app.services.accounts import seed_simulator_accounts
from config import Settings
from tests.processes import Process, celery_worker, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack_env(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment every process of the integration stack shares."""
    upgrade(pg_url)
    data_dir = tmp_path_factory.mktemp("mjq-data")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MJQ_", "DATABASE_URL", "REDIS_URL"))}
    env.update({
        "DATABASE_URL": pg_url, "REDIS_URL": redis_url, "MJQ_DATA_DIR": str(data_dir),
        "MJQ_SIM_JOB_SECONDS": "1", "MJQ_PORT": str(port), "MJQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MJQ_WEB_WORKERS": "1", "MJQ_LOG_LEVEL": "INFO",
    })
    settings = Settings.from_env(env)
    engine = make_engine(settings.effective_database_url)
    with make_session_factory(engine)() as session:
        seed_simulator_accounts(session, 2)
    engine.dispose()
    return env


@pytest.fixture(scope="session")
def stack_settings(stack_env: dict[str, str]) -> Settings:
    return Settings.from_env(stack_env)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def session_factory(stack_settings: Settings):
    engine = make_engine(stack_settings.effective_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def workers(stack_env: dict[str, str], log_dir: Path) -> Iterator[dict[str, Process]]:
    """One fast and one normal worker, as the Procfile runs them, for the whole session."""
    procs = {"fast": celery_worker("mj.fast", "fast@itest", stack_env, log_dir),
             "normal": celery_worker("mj.normal", "normal@itest", stack_env, log_dir)}
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture
def api(stack_settings: Settings, session_factory):
    """A Flask test client on the real database and Redis (its Celery producer talks to real Redis)."""
    from app import create_app

    app = create_app(stack_settings)
    yield app.test_client()
    with session_factory() as session:
        session.execute(delete(Task))
        session.commit()


@pytest.fixture
def redis_client(redis_url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(redis_url)
