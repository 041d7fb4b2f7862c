"""schemathesis over /openapi.json (SQLite, fakeredis, in-memory broker): no answer ≥ 500, each as documented."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from config import Settings
from tests.openapi_fuzz import fuzz

SECRET = "fuzz-secret"
#: Valid and invalid examples per operation: the whole run stays under a minute on a loaded 2-core machine.
EXAMPLES_PER_MODE = 12


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path), sim_job_seconds=0.0,
                             public_url="http://mjq.test", api_secret=SECRET,
                             secret_key=Fernet.generate_key().decode())


def test_no_operation_of_the_openapi_document_answers_a_server_error(app, capsys) -> None:
    report = fuzz(app, SECRET, EXAMPLES_PER_MODE)
    with capsys.disabled():
        print("\n" + report.summary())
    assert report.operations >= 38
    assert report.server_errors == []
    assert report.mismatches == []
