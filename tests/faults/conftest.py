"""The fault suite (`make faults`): one row per test in a table printed at the end."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import PG_ADMIN_URL, create_database, drop_database
from tests.faults.cluster import Cluster, RedisServer

RESULTS: list[dict[str, Any]] = []
#: Node ids of the tests that wrote their row; one that failed before writing it gets a FAIL row.
RECORDED: set[str] = set()
COLUMNS = ("test", "jobs", "lost", "duplicate upstream submits", "time to recover", "figure", "result")


def record(test: str, jobs: int, lost: int, duplicates: int, recover: str, figure: str, ok: bool) -> None:
    RECORDED.add(os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0])
    RESULTS.append({"test": test, "jobs": jobs, "lost": lost, "duplicate upstream submits": duplicates,
                    "time to recover": recover, "figure": figure, "result": "PASS" if ok else "FAIL"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and item.nodeid not in RECORDED:
        reason = str(call.excinfo.value).splitlines()[0][:160] if call.excinfo else "failed"
        RESULTS.append({"test": item.name, "jobs": "-", "lost": "-", "duplicate upstream submits": "-",
                        "time to recover": "-", "figure": reason.replace("|", "/"), "result": "FAIL"})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in RESULTS]
    terminalreporter.write_sep("=", "mjq fault suite")
    for line in lines:
        terminalreporter.write_line(line)
    out = os.environ.get("MJQ_FAULTS_REPORT")
    if out:
        Path(out).write_text("\n".join(lines) + "\n")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh database, a private Redis for mjq, another for the simulated upstream; nothing started."""
    name = f"mjq_faults_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        url = create_database(PG_ADMIN_URL, name)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL is needed for the fault suite: {exc}", pytrace=False)
    redis, upstream = RedisServer(tmp_path / "redis"), RedisServer(tmp_path / "upstream")
    redis.start()
    upstream.start()
    c = Cluster(tmp_path, url, redis, upstream)
    try:
        yield c
    finally:
        c.stop()
        redis.stop()
        upstream.stop()
        drop_database(PG_ADMIN_URL, name)
