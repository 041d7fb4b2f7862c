"""A whole mjq cluster on loopback for the fault suite: its own Redis server (so it can be
killed), its own PostgreSQL database (or its own PostgreSQL server), gunicorn, workers, beat.

Timings are scaled down so faults resolve in seconds: visibility timeout 30 s, slot lease
6 s, reconciler every 3 s, simulated jobs 6 s.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib
import requests
from sqlalchemy import select

from app.db import make_engine, make_session_factory
from app.migrate import upgrade
from app.models import Account, Task, now_ms
from tests.processes import BIN, Process, free_port, gunicorn, wait_for
from workers.drivers.simulator import CRASHES_KEY, SUBMISSIONS_KEY

TERMINAL = ("SUCCESS", "FAILURE", "CANCEL")

FAULT_ENV = {
    "MJQ_VISIBILITY_TIMEOUT_SECONDS": "30", "MJQ_TASK_SOFT_TIME_LIMIT_SECONDS": "20",
    "MJQ_TASK_TIME_LIMIT_SECONDS": "25", "MJQ_MAX_WAIT_SECONDS": "25", "MJQ_SLOT_LEASE_SECONDS": "6",
    "MJQ_RECONCILE_INTERVAL_SECONDS": "3", "MJQ_REQUEUE_AFTER_SECONDS": "8", "MJQ_SIM_JOB_SECONDS": "6",
    "MJQ_WEBHOOK_ALLOW_PRIVATE": "true", "MJQ_WEB_WORKERS": "1", "MJQ_LOG_LEVEL": "INFO",
}


class RedisServer:
    """A private redis-server on a free port; `kill()` is SIGKILL, `restart()` keeps the port."""

    def __init__(self, data_dir: Path, aof: bool = False) -> None:
        self.port = free_port()
        self.dir = data_dir
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--dir",
                str(self.dir), "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for(self.ping, 10, "redis-server to answer")

    def ping(self) -> bool:
        try:
            return bool(redis_lib.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis_lib.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class PostgresServer:
    """A private PostgreSQL cluster (initdb as the postgres user) that a test may stop and start."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.dir = data_dir
        version = sorted(os.listdir("/usr/lib/postgresql"))[-1]
        self.bin = Path(f"/usr/lib/postgresql/{version}/bin")

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def init(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.start()

    def start(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"),
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "-w", "start")

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@dataclass
class Cluster:
    root: Path
    database_url: str
    redis: RedisServer
    upstream: RedisServer  # the simulated upstream's own memory: it survives mjq's Redis faults
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        upgrade(self.database_url)
        self.port = free_port()
        self.engine = make_engine(self.database_url)
        self.sessions = make_session_factory(self.engine)
        with self.sessions() as s:
            s.add(Account(id="sim-1", name="sim", driver="simulator", settings={}, modes=["FAST", "TURBO", "RELAX"],
                          fast_concurrency=300, relax_concurrency=300, queue_size=1000, weight=1, remix=False,
                          bot_types=["MID_JOURNEY"], timeout_minutes=5, enable=True, created_at=now_ms(),
                          updated_at=now_ms()))
            s.commit()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MJQ_", "DATABASE_URL", "REDIS_URL"))}
        env.update(FAULT_ENV)
        env.update({"DATABASE_URL": self.database_url, "REDIS_URL": self.redis.url, "MJQ_PORT": str(self.port),
                    "MJQ_SIM_STATE_URL": self.upstream.url,
                    "MJQ_PUBLIC_URL": f"http://127.0.0.1:{self.port}", "MJQ_DATA_DIR": str(self.root / "data")})
        env.update(self.extra_env)
        return env

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_web(self) -> None:
        self.procs["web"] = gunicorn(self.env, self.root)

    def start_worker(self, name: str = "fast", queue: str = "mj.fast", concurrency: int = 100,
                     wait_ready: bool = True) -> Process:
        proc = Process(f"{name}-{int(time.time() * 1000)}", [
            str(BIN / "celery"), "-A", "workers.celery_app", "worker", "-Q", queue, "-P", "threads",
            "-c", str(concurrency), "-n", f"{name}@faults", "--without-mingle", "--without-gossip", "-l", "INFO",
        ], self.env, self.root)
        if wait_ready:
            proc.wait_for_output(" ready.", timeout=60)
        self.procs[name] = proc
        return proc

    def start_beat(self) -> None:
        self.procs["beat"] = Process("beat", [
            str(BIN / "celery"), "-A", "workers.celery_app", "worker", "-B", "-Q", "mj.maintenance,mj.webhooks",
            "-P", "threads", "-c", "4", "-n", "beat@faults", "--without-mingle", "--without-gossip", "-l", "INFO",
            "-s", str(self.root / "celerybeat-schedule"),
        ], self.env, self.root)
        self.procs["beat"].wait_for_output(" ready.", timeout=60)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].signal_group(sig)

    def submit(self, prompt: str, hook: str | None = None, timeout: float = 10) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"prompt": prompt}
        if hook:
            body["notifyHook"] = hook
        resp = requests.post(f"{self.base}/mj/submit/imagine", json=body, timeout=timeout)
        return resp.status_code, (resp.json() if resp.content else {})

    def rows(self, ids: list[int]) -> dict[int, Task]:
        with self.sessions() as s:
            return {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(ids)))}

    def wait_terminal(self, ids: list[int], timeout: float) -> float:
        start = time.monotonic()
        wait_for(lambda: all(t.status in TERMINAL for t in self.rows(ids).values()), timeout,
                 f"{len(ids)} jobs to finish", interval=0.5)
        return time.monotonic() - start

    def submissions(self) -> dict[str, int]:
        client = redis_lib.Redis(port=self.upstream.port)
        return {k.decode(): int(v) for k, v in client.hgetall(SUBMISSIONS_KEY).items()}

    def crashes(self) -> dict[str, int]:
        """Executions of `[sim:crash]` jobs per nonce, counted by the upstream before each kill."""
        client = redis_lib.Redis(port=self.upstream.port)
        return {k.decode(): int(v) for k, v in client.hgetall(CRASHES_KEY).items()}

    def _extra_submissions(self, ids: list[int]) -> list[int]:
        counts = self.submissions()
        return [max(0, counts.get(t.properties.get("nonce"), 0) - 1) for t in self.rows(ids).values()]

    def duplicates(self, ids: list[int]) -> int:
        """Upstream submissions beyond the first, summed over `ids`."""
        return sum(self._extra_submissions(ids))

    def max_duplicates(self, ids: list[int]) -> int:
        """The most upstream submissions beyond the first of any one job of `ids`."""
        return max(self._extra_submissions(ids), default=0)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout=15)
        self.engine.dispose()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
