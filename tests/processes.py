"""Real processes for integration and e2e tests: celery workers, gunicorn, the whole stack.

Each process writes its output to a log file the test can read, and is stopped (then
killed) at teardown so a failed test leaves nothing running.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """A subprocess in its own process group with its output in `log_path`."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=dict(env), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            return text in self.output()

        wait_for(seen, timeout, f"{text!r} in the output of {self.name}")

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def celery_worker(queue: str, node: str, env: Mapping[str, str], log_dir: Path, concurrency: int = 20,
                  extra_args: Sequence[str] = ()) -> Process:
    """`celery worker` on one queue, as the Procfile runs it; returns once it is consuming."""
    proc = Process(node.split("@")[0], [
        str(BIN / "celery"), "-A", "workers.celery_app", "worker", "-Q", queue, "-P", "threads",
        "-c", str(concurrency), "-n", node, "--without-mingle", "--without-gossip", "-E", "-l", "INFO",
        *extra_args,
    ], env, log_dir)
    proc.wait_for_output(" ready.", timeout=60)
    return proc


def gunicorn(env: Mapping[str, str], log_dir: Path, app: str = "app:create_app()") -> Process:
    """The web process (`app`) with the production server config; returns once /health answers."""
    import requests

    proc = Process("web", [str(BIN / "gunicorn"), "-c", "python:config.gunicorn", app], env, log_dir)
    url = f"http://127.0.0.1:{env['MJQ_PORT']}/health"

    def up() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{proc.output()[-3000:]}")
        try:
            return requests.get(url, timeout=1).ok
        except requests.RequestException:
            return False

    wait_for(up, 30, "gunicorn to answer /health")
    return proc


@contextmanager
def make_run_stack(name: str, data_dir: Path, settings: Mapping[str, str]) -> Iterator[tuple[str, Process]]:
    """`make -s run` as a new user runs it, with only `settings` (and free ports) set: yields (base URL,
    the process). Ctrl-C (SIGINT to the group) stops it at the end, as in a terminal."""
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MJQ_", "DATABASE_URL", "REDIS_URL"))}
    env.update({"MJQ_PORT": str(port), "MJQ_FLOWER_PORT": str(flower_port), "MJQ_DATA_DIR": str(data_dir)})
    env.update(settings)
    proc = Process(name, ["make", "-s", "run"], env, data_dir)
    try:
        proc.wait_for_output("mjq is up", timeout=120)
        yield f"http://127.0.0.1:{env['MJQ_PORT']}", proc
    finally:
        proc.signal_group(signal.SIGINT)
        try:
            proc.proc.wait(timeout=60)
        finally:
            proc.stop()
