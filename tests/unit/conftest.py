"""Unit fixtures: SQLite in a temp dir, fakeredis, Celery on the in-memory broker."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.db import make_engine, make_session_factory
from app.images import LocalImageStore
from app.services.accounts import seed_simulator_accounts
from config import Settings
from workers import queues
from workers.celery_app import make_celery


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    # A server of its own: fakeredis instances otherwise share data across tests.
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def celery(settings: Settings) -> Iterator[Celery]:
    app = make_celery(settings, broker_url="memory://")
    with app.connection_for_write() as conn:
        for name in queues.ALL:
            conn.SimpleQueue(name).clear()
    yield app


def drain(celery: Celery, queue: str) -> list[dict[str, Any]]:
    """Every message waiting on `queue` of the memory broker: [{'task', 'args', 'id'}]."""
    out = []
    with celery.connection_for_write() as conn:
        q = conn.SimpleQueue(queue)
        while q.qsize():
            msg = q.get(timeout=1)
            out.append({"task": msg.headers["task"], "args": msg.payload[0], "id": msg.headers["id"]})
            msg.ack()
        q.close()
    return out


@pytest.fixture
def session_factory(settings: Settings):
    engine = make_engine(settings.effective_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def accounts(session_factory) -> None:
    with session_factory() as session:
        seed_simulator_accounts(session, 2)


@pytest.fixture
def images(settings: Settings) -> LocalImageStore:
    return LocalImageStore(settings.images_dir, settings.effective_public_url)


@pytest.fixture
def app(settings: Settings, celery: Celery, redis: fakeredis.FakeRedis, accounts: None) -> Flask:
    return create_app(settings, celery=celery, redis=redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def walk(client, celery, session_factory, redis, images):
    """Submit requests through the API and run the queued jobs with the executor (tests/unit/test_actions.py)."""
    from tests.unit.test_actions import Walk

    return Walk(client, celery, session_factory, redis, images)
