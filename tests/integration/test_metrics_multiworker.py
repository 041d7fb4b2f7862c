"""`/metrics` from gunicorn with two workers over real PostgreSQL, Redis and Celery workers: every
scrape, whichever worker answers it, gives the same cluster-wide totals, equal to the database's;
and a scrape of 100k stored tasks counts them all."""
from __future__ import annotations

import json
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select, text

from app.db import make_engine, make_session_factory
from app.metrics import MjqCollector
from app.models import Task, now_ms
from tests.databases import fresh_database
from tests.processes import free_port, gunicorn, wait_for

pytestmark = pytest.mark.integration

#: Scrapes made on fresh connections, so the kernel hands them to either gunicorn worker.
SCRAPES = 8


def totals(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The counter samples of one scrape (gauges such as ages move between scrapes by design)."""
    body = requests.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) if family.type in ("counter", "histogram")
            for s in family.samples}


def test_two_gunicorn_workers_give_the_same_totals_as_the_database(stack_env, workers, session_factory, tmp_path):
    env = {**stack_env, "MJQ_WEB_WORKERS": "2", "MJQ_WEB_THREADS": "2", "MJQ_PORT": str(free_port()),
           "MJQ_LOG_FORMAT": "json", "MJQ_LOG_LEVEL": "DEBUG"}
    web = gunicorn(env, tmp_path)
    base = f"http://127.0.0.1:{env['MJQ_PORT']}"
    try:
        ids = []
        for i, prefix in enumerate(("/mj-fast/mj", "/mj-relax/mj", "/mj-fast/mj")):
            answer = requests.post(f"{base}{prefix}/submit/imagine", json={"prompt": f"a metered fox {i}"},
                                   headers={"X-Request-Id": f"itest-metrics-{i}"}, timeout=10)
            assert answer.headers["X-Request-Id"] == f"itest-metrics-{i}"
            ids.append(int(answer.json()["result"]))

        def all_finished() -> bool:
            with session_factory() as s:
                return s.scalar(select(func.count()).where(Task.id.in_(ids), Task.status == "SUCCESS")) == 3

        wait_for(all_finished, 60, "the three jobs to finish")
        scrapes = [totals(base) for _ in range(SCRAPES)]
    finally:
        web.stop()
    assert all(s == scrapes[0] for s in scrapes)
    with session_factory() as s:
        stored = dict(s.execute(select(Task.mode, func.count()).where(Task.action == "IMAGINE")
                                .group_by(Task.mode)).all())
    for mode in ("FAST", "RELAX"):
        assert scrapes[0][("mjq_jobs_submitted_total", (("action", "IMAGINE"), ("mode", mode)))] == stored[mode] > 0
    assert scrapes[0][("mjq_job_duration_seconds_count", (("action", "IMAGINE"), ("mode", "RELAX")))] >= 1
    # The web process wrote JSON lines carrying each request's id, and the worker's lines name their task.
    lines = [json.loads(line) for line in web.output().splitlines() if line.startswith("{")]
    assert all({"ts", "level", "logger", "message", "role"} <= set(line) for line in lines)
    submits = [line for line in lines if line.get("request_id", "").startswith("itest-metrics-")]
    assert {line["request_id"] for line in submits} == {f"itest-metrics-{i}" for i in range(3)}
    assert all(line["role"] == "web" and "POST /mj-" in line["message"] for line in submits)
    assert f"task_id={ids[0]}" in workers["fast"].output()


def test_a_scrape_of_100k_tasks_counts_every_one_on_postgresql():
    """Correctness on a big table. How long a scrape takes is a benchmark's business (bench/), not a test's:
    the time is printed for the record only."""
    with fresh_database("metrics") as url:
        engine = make_engine(url)
        base = now_ms()
        # A year of a busy service, roughly: 90 % successes, 6 % failures, 4 % cancels, a few open.
        statuses = ("SUCCESS",) * 45 + ("FAILURE",) * 3 + ("CANCEL",) * 2
        rows = [{"id": base * 1000 + i, "action": ("IMAGINE", "UPSCALE", "VARIATION")[i % 3],
                 "status": statuses[i % 50] if i >= 100 else ("NOT_START", "IN_PROGRESS")[i % 2],
                 "mode": ("FAST", "RELAX", "TURBO")[i % 3], "queue": "mj.fast", "submit_time": base - i,
                 "start_time": base - i, "finish_time": base - i + (i * 7919) % 600_000,
                 "fail_reason": "[Banned prompt detected] no" if i % 50 == 45 else "timed out: no progress",
                 "account_id": f"sim-{i % 2 + 1}", "updated_at": base, "properties": {}, "buttons": [],
                 "inputs": {}} for i in range(100_000)]
        with make_session_factory(engine)() as session:
            session.execute(insert(Task), rows)
            session.execute(text("ANALYZE tasks"))  # what autovacuum does after a bulk load
            session.commit()
        took = []
        with make_session_factory(engine)() as session:
            for _ in range(5):
                started = time.perf_counter()
                families = list(MjqCollector(session).collect())
                took.append(time.perf_counter() - started)
        engine.dispose()
    submitted = next(f for f in families if f.name == "mjq_jobs_submitted")
    assert sum(s.value for s in submitted.samples) == 100_000
    print(f"scrape of 100k tasks: best {min(took) * 1000:.0f} ms of {len(took)}")
