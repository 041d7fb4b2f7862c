"""P1: `POST /mj/submit/imagine` requests/s on the production web config, beside a bare Flask app.

Both apps run under `gunicorn -c python:config.gunicorn` with the default MJQ_WEB_WORKERS
and MJQ_WEB_THREADS; the load comes from another process over keep-alive connections.
No worker runs: the queue just fills (the stack is reset afterwards). A second pass at half
of the measured peak, paced at a fixed rate, gives the p99 a client sees under normal load.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import psutil

from app import protocol
from bench import load
from bench.harness import PROMPT, CpuMeter, CpuPerItem, Stack, cpu_budget_ms
from bench.report import Row, Section, ms, per_second, ratio
from config import Settings
from tests.processes import Process

WARMUP_SECONDS = 2
PEAK_SECONDS = 10
PACED_SECONDS = 10
#: Passes tried at most, until no worker holds more than MAX_UNEVENNESS of the connections.
PASS_ATTEMPTS = 3
MAX_UNEVENNESS = 0.75
#: When a pass's connections are counted per worker (after they all opened).
SPLIT_SAMPLE_AFTER_SECONDS = 3.5
#: Share of the measured peak offered in the paced pass.
PACED_SHARE = 0.5
TARGET_SHARE = 0.5
TARGET_P99_MS = 25.0

BODY = json.dumps({"prompt": PROMPT})


def connections_per_worker(web_pid: int, port: int) -> list[int]:
    """Established client connections held by each gunicorn worker of `web_pid`."""
    counts = []
    for child in psutil.Process(web_pid).children():
        try:
            counts.append(sum(1 for c in child.net_connections("tcp")
                              if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED))
        except psutil.NoSuchProcess:
            pass
    return sorted(counts, reverse=True)


@dataclass
class Peak:
    """The peak pass of one app: the load's figures and CPU per request."""

    load: load.Load
    cpu: CpuPerItem  # `worker_ms` is the gunicorn workers'


T = TypeVar("T")


def even_passes(web_pid: int, port: int, one_pass: Callable[[], T]) -> tuple[T, list[list[int]]]:
    """Run `one_pass` until no gunicorn worker holds more than MAX_UNEVENNESS of the connections
    (at most PASS_ATTEMPTS times); the most even pass and every pass's split.

    A pass whose connections piled onto one worker measures one worker, not the server.
    """
    best: T | None = None
    best_unevenness = 2.0
    splits: list[list[int]] = []
    for _ in range(PASS_ATTEMPTS):
        split: list[int] = []
        sampler = threading.Timer(SPLIT_SAMPLE_AFTER_SECONDS,
                                  lambda out=split: out.extend(connections_per_worker(web_pid, port)))
        sampler.start()
        result = one_pass()
        sampler.join()
        splits.append(split)
        if _unevenness(split) < best_unevenness:
            best, best_unevenness = result, _unevenness(split)
        if best_unevenness <= MAX_UNEVENNESS:
            break
    assert best is not None
    return best, splits


def _unevenness(split: list[int]) -> float:
    """Share of the connections held by the busiest worker (1.0 = all on one)."""
    return max(split) / sum(split) if split and sum(split) else 1.0


def _serve(stack: Stack, app: str) -> tuple[Process, str]:
    """`app` under gunicorn with the production config, warmed up; (process, submit URL)."""
    env = stack.env()
    web = stack.web(env, app=app)
    url = f"http://127.0.0.1:{env['MJQ_PORT']}/mj/submit/imagine"
    load.peak(url, BODY, WARMUP_SECONDS, stack.work_dir)
    return web, url


def _peak(stack: Stack, web: Process, url: str) -> tuple[Peak, list[list[int]]]:
    workers = [child.pid for child in psutil.Process(web.pid).children()]

    def one_pass() -> Peak:
        meter = CpuMeter(stack, workers)
        result = load.peak(url, BODY, PEAK_SECONDS, stack.work_dir)
        return Peak(result, meter.per(result.requests))

    return even_passes(web.pid, urlsplit(url).port or 80, one_pass)


def budget_note(base_rps: float, mjq: CpuPerItem, base: CpuPerItem) -> str:
    """What the target leaves per request: the machine's cores over the target's rate, for every process."""
    rate = TARGET_SHARE * base_rps
    cores, budget = cpu_budget_ms(rate)
    return (f"the target's CPU budget: at {TARGET_SHARE:.0%} of the baseline ({rate:,.0f} req/s) the {cores} cores "
            f"give {budget:.2f} ms per request to every process together (gunicorn, PostgreSQL, Redis, the load "
            f"generator); PostgreSQL (the durable INSERT and its commit) and Redis (the admission and the message) "
            f"took {mjq.postgres_ms + mjq.redis_ms:.2f} ms by themselves, before any of mjq's Python, and the bare "
            f"endpoint's gunicorn workers alone take {base.worker_ms:.2f} ms")


def run(stack: Stack) -> Section:
    section = Section("P1", "submit requests/s on the production web config")
    stack.reset()
    settings = Settings.from_env(stack.env())
    web, url = _serve(stack, "bench.baseline_app:create_app()")
    base_peak, base_splits = _peak(stack, web, url)
    stack.stop_all()

    stack.reset()
    web, url = _serve(stack, "app:create_app()")
    mjq, splits = _peak(stack, web, url)
    base, peak = base_peak.load, mjq.load
    rate = peak.rps * PACED_SHARE
    paced, paced_splits = even_passes(web.pid, urlsplit(url).port or 80,
                                      lambda: load.paced(url, BODY, rate, PACED_SECONDS))
    stack.stop_all()
    accepted = stack.count(protocol.OPEN_STATUSES)
    enqueued = sum(1 for t in stack.tasks() if t.enqueued_at)
    stack.reset()

    share = peak.rps / base.rps if base.rps else 0.0
    section.rows += [
        Row("P1", "submit/imagine, peak", per_second(peak.rps, "req"), per_second(base.rps, "req"),
            ratio(peak.rps, base.rps), f"≥ {TARGET_SHARE:.0%}", share >= TARGET_SHARE),
        Row("P1", f"submit p99 at {PACED_SHARE:.0%} of peak ({rate:.0f} req/s)", ms(paced.p99_ms),
            f"p50 {ms(paced.p50_ms)}", "—", f"≤ {TARGET_P99_MS:.0f} ms", paced.p99_ms <= TARGET_P99_MS),
    ]
    errors = peak.errors + paced.errors
    section.notes += [
        f"server: gunicorn -c python:config.gunicorn, {settings.web_workers} workers × {settings.web_threads} "
        f"threads (gthread), MJQ_LOG_LEVEL={settings.log_level}; baseline `bench/baseline_app.py` under the same "
        "config",
        f"peak load: {peak.tool}, {load.CONNECTIONS} keep-alive connections opened in {load.GROUPS} groups "
        f"{load.STAGGER_SECONDS:g} s apart, {PEAK_SECONDS} s after a {WARMUP_SECONDS} s warm-up",
        f"connections per gunicorn worker in each pass: peak mjq {splits}, baseline {base_splits}, paced "
        f"{paced_splits}; a pass with more than {MAX_UNEVENNESS:.0%} of them on one worker measures one worker, "
        f"so it is run again (at most {PASS_ATTEMPTS} passes, the most even kept). gthread workers race to accept: "
        "connections opened in one burst all land on one worker",
        f"CPU per request at peak: gunicorn workers {mjq.cpu.worker_ms:.2f} ms (baseline {base_peak.cpu.worker_ms:.2f} "
        f"ms), PostgreSQL backends {mjq.cpu.postgres_ms:.2f} ms, Redis {mjq.cpu.redis_ms:.2f} ms",
        budget_note(base.rps, mjq.cpu, base_peak.cpu),
        f"at peak, worst group's p50 / p99: mjq {ms(peak.p50_ms)} / {ms(peak.p99_ms)}, baseline "
        f"{ms(base.p50_ms)} / {ms(base.p99_ms)}",
        f"paced pass: bench.loadgen, open loop at {rate:.0f} req/s for {PACED_SECONDS} s over "
        f"{load.CONNECTIONS} connections, latency from each request's due time; {paced.requests} requests",
        f"every answer checked: {errors} non-2xx or socket errors; {accepted} tasks written, {enqueued} of them "
        "with their message sent (no worker ran)",
        f"body: `{BODY}`",
    ]
    if errors:
        section.error = f"{errors} requests failed during the load"
    return section
