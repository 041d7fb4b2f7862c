from __future__ import annotations

import pytest

from config import ConfigError, Settings, options


def test_defaults_carry_the_documented_values():
    s = Settings.from_env({})
    assert (s.port, s.default_mode, s.sim_job_seconds, s.data_dir) == (8080, "FAST", 6.0, "instance")
    assert s.effective_public_url == "http://127.0.0.1:8080"
    assert s.effective_database_url.startswith("sqlite:///") and s.effective_database_url.endswith("mjq.sqlite3")


@pytest.mark.parametrize("env, name", [
    ({"MJQ_PORT": "eighty"}, "MJQ_PORT"),
    ({"MJQ_PORT": "70000"}, "MJQ_PORT"),
    ({"MJQ_DEFAULT_MODE": "SLOW"}, "MJQ_DEFAULT_MODE"),
    ({"MJQ_SIM_JOB_SECONDS": "-1"}, "MJQ_SIM_JOB_SECONDS"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ({"MJQ_PUBLIC_URL": "ftp://x"}, "MJQ_PUBLIC_URL"),
])
def test_a_bad_value_stops_with_a_message_naming_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_time_limits_must_stay_below_the_visibility_timeout():
    with pytest.raises(ConfigError, match="MJQ_VISIBILITY_TIMEOUT_SECONDS"):
        Settings.from_env({"MJQ_VISIBILITY_TIMEOUT_SECONDS": "60"})


def test_postgres_urls_use_psycopg2():
    s = Settings.from_env({"DATABASE_URL": "postgres://u@h/db"})
    assert s.effective_database_url == "postgresql+psycopg2://u@h/db"


def test_the_cli_prints_the_option_table(capsys):
    from app.cli import main

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for env, _default, _help in options():
        assert env in out


def test_the_cli_reports_a_config_error_without_a_traceback(monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("MJQ_PORT", "x")
    assert main(["migrate"]) == 2
    assert "MJQ_PORT" in capsys.readouterr().err


def test_the_readme_documents_every_setting():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [env for env, _d, _h in options() if f"`{env}`" not in readme]
    assert missing == []
