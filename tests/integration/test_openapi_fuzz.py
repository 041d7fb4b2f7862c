"""schemathesis over /openapi.json on a real PostgreSQL database, which enforces column types and
lengths SQLite lets through: no answer ≥ 500, every answer as documented."""
from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from cryptography.fernet import Fernet

from app import create_app
from app.db import make_engine, make_session_factory
from app.services.accounts import seed_simulator_accounts
from config import Settings
from tests.databases import fresh_database
from tests.openapi_fuzz import fuzz
from workers.celery_app import make_celery

pytestmark = pytest.mark.integration

SECRET = "fuzz-secret"
#: Valid and invalid examples per operation: the whole run stays near a minute on a loaded 2-core machine.
EXAMPLES_PER_MODE = 10


def test_no_operation_answers_a_server_error_on_postgresql(tmp_path: Path, capsys) -> None:
    with fresh_database("openapi_fuzz") as url:
        settings = Settings.from_env({}, database_url=url, data_dir=str(tmp_path), sim_job_seconds=0.0,
                                     public_url="http://mjq.test", api_secret=SECRET,
                                     secret_key=Fernet.generate_key().decode())
        engine = make_engine(url)
        with make_session_factory(engine)() as session:
            seed_simulator_accounts(session, 2)
        app = create_app(settings, celery=make_celery(settings, broker_url="memory://"),
                         redis=fakeredis.FakeRedis(server=fakeredis.FakeServer()))
        try:
            report = fuzz(app, SECRET, EXAMPLES_PER_MODE)
        finally:
            engine.dispose()  # the app's own pool goes with the database (dropped WITH (FORCE))
    with capsys.disabled():
        print("\n" + report.summary())
    assert report.server_errors == []
    assert report.mismatches == []
