"""What every benchmark shares: private services, mjq processes, in-process submits, meters.

`Stack` owns a PostgreSQL database `mjq_bench_<pid>` (migrated, seeded with simulator
accounts that have a slot for every job a benchmark runs) and one claimed, empty Redis
database number; `close()` drops the one and empties the other. Worker and web processes
are started with the helpers the integration tests use (`tests/processes.py`).
"""
from __future__ import annotations

import os
import platform
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import redis as redis_lib
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.db import make_engine, make_session_factory
from app.migrate import upgrade
from app.models import Account, Task
from app.services.accounts import seed_simulator_accounts
from config import Settings
from config.errors import MjqError
from tests.processes import Process, celery_worker, free_port, gunicorn, wait_for

PG_ADMIN_URL = os.environ.get("MJQ_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("MJQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
#: Redis database numbers the benchmarks may claim (the tests claim from 15 down, 0 is left alone).
REDIS_BENCH_DBS = range(14, 7, -1)
REDIS_CLAIM_KEY = "mjq:bench:claimed-by"
#: Simulator accounts the stack seeds, and the slots each gets per mode ("enough for every job").
SIM_ACCOUNTS = 2
SLOTS_PER_ACCOUNT = 5000
#: A prompt of ordinary length (the simulator renders it; `--ar` changes the picture's shape).
PROMPT = "a red fox in a snowy forest at dawn, cinematic light --ar 16:9"


class BenchError(MjqError):
    """A benchmark could not run (a service is missing, a submit was refused, a job never ended)."""


class Stack:
    """The services and processes of one `make bench` run. Use as a context manager."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.data_dir = work_dir / "data"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[Process] = []
        self._started = 0
        self.db_name = f"mjq_bench_{os.getpid()}"
        self.pg_url = self._create_database()
        self.redis_url, self.redis = self._claim_redis_db()
        self.engine = make_engine(self.pg_url)
        self.session_factory: sessionmaker = make_session_factory(self.engine)
        try:
            upgrade(self.pg_url)
            with self.session_factory() as session:
                seed_simulator_accounts(session, SIM_ACCOUNTS)
                session.execute(update(Account).values(fast_concurrency=SLOTS_PER_ACCOUNT,
                                                       relax_concurrency=SLOTS_PER_ACCOUNT,
                                                       queue_size=SLOTS_PER_ACCOUNT))
                session.commit()
        except BaseException:
            self.close()
            raise

    # -- services -------------------------------------------------------------------------

    def _create_database(self) -> str:
        try:
            admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
        except psycopg2.OperationalError as exc:
            raise BenchError(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}") from None
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{self.db_name}"')
        admin.close()
        return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{self.db_name}"

    def _claim_redis_db(self) -> tuple[str, redis_lib.Redis]:
        token = f"{os.getpid()}-{uuid.uuid4()}"
        for number in REDIS_BENCH_DBS:
            client = redis_lib.Redis.from_url(f"{REDIS_BASE_URL}/{number}", socket_connect_timeout=3)
            try:
                if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, token, nx=True):
                    return f"{REDIS_BASE_URL}/{number}", client
            except redis_lib.RedisError as exc:
                raise BenchError(f"Redis is not reachable at {REDIS_BASE_URL}: {exc}") from None
            client.close()
        raise BenchError(f"no empty Redis database among {list(REDIS_BENCH_DBS)} to claim")

    def env(self, **overrides: str | float | int) -> dict[str, str]:
        """The environment of mjq processes on this stack (a fresh web port each time), plus `overrides`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MJQ_", "DATABASE_URL", "REDIS_URL"))}
        port = free_port()
        env.update({
            "DATABASE_URL": self.pg_url, "REDIS_URL": self.redis_url, "MJQ_DATA_DIR": str(self.data_dir),
            "MJQ_PORT": str(port), "MJQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
            # Benchmark webhooks go to a receiver on loopback, which the SSRF guard refuses by default.
            "MJQ_WEBHOOK_ALLOW_PRIVATE": "true",
        })
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def reset(self) -> None:
        """Empty every table but the accounts (and their version row), the Redis database and the image store.

        Kombu's queue bindings stay too: a producer declares them once per connection and
        would publish into nothing if they vanished under it.
        """
        with self.session_factory() as session:
            # account_versions too: without its row the API's accounts cache is off (bench P1 was ~30 % slower)
            tables = session.scalars(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT IN ('accounts', 'account_versions', 'alembic_version')")).all()
            session.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)))
            session.commit()
        doomed = [k for k in self.redis.scan_iter(count=1000)
                  if k != REDIS_CLAIM_KEY.encode() and not k.startswith(b"_kombu.binding.")]
        for start in range(0, len(doomed), 1000):
            self.redis.unlink(*doomed[start:start + 1000])
        shutil.rmtree(self.data_dir / "images", ignore_errors=True)

    def close(self) -> None:
        """Stop every process, drop the database, empty and release the Redis database."""
        self.stop_all()
        self.engine.dispose()
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        admin.close()
        self.redis.flushdb()
        self.redis.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes --------------------------------------------------------------------------

    def worker(self, queue: str, node: str, env: Mapping[str, str], concurrency: int | None = None,
               include: str | None = None) -> Process:
        """A `celery worker` as the Procfile runs it (threads pool), consuming once this returns."""
        settings = Settings.from_env(env)
        extra = ["--include", include] if include else []
        # A fresh name per start: the helper waits for " ready." in the node's own log file.
        self._started += 1
        proc = celery_worker(queue, f"{node}-{self._started}@bench", env, self.log_dir,
                             concurrency=concurrency or settings.worker_concurrency, extra_args=extra)
        self.processes.append(proc)
        return proc

    def web(self, env: Mapping[str, str], app: str = "app:create_app()") -> Process:
        """gunicorn with the production config (`config/gunicorn.py`), answering once this returns."""
        proc = gunicorn(env, self.log_dir, app=app)
        self.processes.append(proc)
        return proc

    def stop(self, proc: Process, kill: bool = False) -> None:
        """Stop `proc`; `kill` skips the warm shutdown (a worker would wait for its running jobs)."""
        if kill:
            proc.signal_group(9)
        proc.stop(timeout=15)
        if proc in self.processes:
            self.processes.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.processes):
            self.stop(proc, kill=True)

    # -- reading results --------------------------------------------------------------------

    def count(self, statuses: Iterable[str]) -> int:
        """Tasks currently in one of `statuses`."""
        with self.session_factory() as session:
            return int(session.scalar(select(func.count()).select_from(Task)
                                      .where(Task.status.in_(list(statuses)))) or 0)

    def wait_count(self, statuses: Iterable[str], n: int, timeout: float, what: str, interval: float = 0.05) -> None:
        """Wait until at least `n` tasks are in `statuses`; BenchError after `timeout` seconds."""
        wanted = list(statuses)
        try:
            wait_for(lambda: self.count(wanted) >= n, timeout, what, interval=interval)
        except AssertionError as exc:
            raise BenchError(f"{exc} ({self.count(wanted)} of {n}; logs in {self.log_dir})") from None

    def pg_backends(self) -> list[int]:
        """Process ids of the PostgreSQL backends connected to this stack's database (not this query's)."""
        with self.engine.connect() as conn:
            return [int(pid) for pid in conn.scalars(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"),
                {"db": self.db_name})]

    def tasks(self) -> list[Task]:
        with self.session_factory() as session:
            return list(session.scalars(select(Task)))


class Api:
    """The mjq Flask app inside the benchmark process (the same submit code; its Celery
    producer publishes to the stack's Redis). No HTTP server in between."""

    def __init__(self, env: Mapping[str, str]) -> None:
        from app import create_app

        self.settings = Settings.from_env(env, log_level="WARNING")
        self.app = create_app(self.settings)
        self.client = self.app.test_client()

    def submit(self, prompt: str = PROMPT, hook: str | None = None) -> tuple[int, float]:
        """Submit an IMAGINE; returns (task id, wall-clock epoch ms when the answer was complete)."""
        body: dict[str, Any] = {"prompt": prompt}
        if hook:
            body["notifyHook"] = hook
        answer = self.client.post("/mj/submit/imagine", json=body)
        answered_ms = time.time() * 1000.0
        data = answer.get_json(silent=True) or {}
        if data.get("code") != protocol.CODE_SUCCESS:
            raise BenchError(f"submit refused: HTTP {answer.status_code} {answer.get_data(as_text=True)[:300]}")
        return int(data["result"]), answered_ms

    def close(self) -> None:
        from app.db import db

        with self.app.app_context():
            db.engine.dispose()
        self.app.extensions["mjq"].dispatcher.celery.close()
        self.app.extensions["mjq"].redis.close()


@dataclass
class Usage:
    """What a set of processes used over a window: peak total RSS and CPU as a fraction of one core."""

    rss_bytes: int
    cpu_cores: float
    seconds: float


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return procs


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by `pids` (processes that are gone count 0)."""
    return sum(cpu_by_pid(pids).values())


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each of `pids` that still runs."""
    used = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        used[pid] = times.user + times.system
    return used


@dataclass
class CpuPerItem:
    """CPU milliseconds per job (or task) of the workers, the stack's PostgreSQL backends and the Redis server."""

    worker_ms: float
    postgres_ms: float
    redis_ms: float


class CpuMeter:
    """CPU used by `workers`, the stack's PostgreSQL backends and the Redis server from construction to `per`.

    A backend that connects in between counts from zero; one that disconnects in between is not counted.
    The Redis server is the whole server: nothing but the benchmark uses it while one runs.
    """

    def __init__(self, stack: Stack, workers: Iterable[int]) -> None:
        self.stack = stack
        self.workers = [p.pid for p in _tree(workers)]
        self.redis_pid = int(stack.redis.info("server")["process_id"])
        self.start = self._sample()

    def _sample(self) -> dict[str, dict[int, float]]:
        return {"worker": cpu_by_pid(self.workers), "postgres": cpu_by_pid(self.stack.pg_backends()),
                "redis": cpu_by_pid([self.redis_pid])}

    def per(self, items: int) -> CpuPerItem:
        """CPU ms per item since the meter was made (call before the workers stop)."""
        end = self._sample()

        def used(kind: str) -> float:
            return sum(t - self.start[kind].get(pid, 0.0) for pid, t in end[kind].items()) * 1000 / max(items, 1)

        return CpuPerItem(used("worker"), used("postgres"), used("redis"))


def cpu_budget_ms(rate: float) -> tuple[int, float]:
    """This machine's cores, and the CPU milliseconds they give each item at `rate` items/s (0 for no rate)."""
    cores = psutil.cpu_count() or 1
    return cores, cores * 1000 / rate if rate > 0 else 0.0


def measure_usage(pids: Iterable[int], seconds: float, interval: float = 1.0) -> Usage:
    """Sample RSS every `interval` s and CPU time over `seconds` for `pids` and their children."""
    procs = _tree(pids)

    def cpu() -> float:
        return cpu_seconds(p.pid for p in procs)

    def rss() -> int:
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    start, cpu0, peak = time.monotonic(), cpu(), rss()
    while time.monotonic() - start < seconds:
        time.sleep(interval)
        peak = max(peak, rss())
    elapsed = time.monotonic() - start
    return Usage(peak, (cpu() - cpu0) / elapsed, elapsed)


def machine(stack: Stack) -> dict[str, str]:
    """Facts about the machine and services the figures were measured on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    with stack.engine.connect() as conn:
        pg_version = str(conn.scalar(text("SHOW server_version")))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    server: dict[str, Any] = stack.redis.info("server")  # type: ignore[assignment]
    return {
        "cpu": f"{model}, {os.cpu_count()} cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": str(server.get("redis_version")),
        "load average at start (1/5/15 min)": load,
    }
