"""`mjq imagine … --wait --out` and `mjq action … --wait --out` as subprocesses against a real stack."""
from __future__ import annotations

import io
import os
import pty
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.processes import BIN, ROOT, Process, gunicorn

pytestmark = pytest.mark.integration

MJQ = str(BIN / "mjq")


@pytest.fixture(scope="module")
def web(stack_env: dict[str, str], log_dir: Path, workers) -> Iterator[Process]:
    proc = gunicorn(stack_env, log_dir)
    yield proc
    proc.stop()


def run_with_tty_stderr(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `argv` with stderr on a pseudo-terminal (as in a shell); returns (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=60), stdout, b"".join(chunks).decode(errors="replace")


def percentages(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"(\d+)%", text)]


def decode_png(path: Path) -> Image.Image:
    image = Image.open(io.BytesIO(path.read_bytes()))
    image.load()
    assert image.format == "PNG"
    return image


def test_imagine_wait_draws_a_rising_progress_bar_and_saves_the_png(stack_env, web, tmp_path):
    code, stdout, stderr = run_with_tty_stderr([MJQ, "imagine", "a red fox", "--wait", "--out", "fox.png"],
                                               stack_env, tmp_path)
    assert code == 0, stderr
    task_id, image_url = stdout.split()[:2]
    assert task_id.isdigit() and image_url.startswith(stack_env["MJQ_PUBLIC_URL"])
    seen = percentages(stderr)
    assert seen == sorted(seen) and seen[-1] == 100 and len(set(seen)) >= 3, stderr
    assert "\r" in stderr and "█" in stderr and "SUCCESS" in stderr  # the redrawn terminal bar
    assert decode_png(tmp_path / "fox.png").width > 0


def test_action_u2_wait_saves_the_upscale_and_plain_stderr_gets_one_line_per_change(stack_env, web, tmp_path):
    made = subprocess.run([MJQ, "imagine", "a red fox", "--wait"], env=stack_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    grid_id = made.stdout.split()[0]
    assert re.search(rf"^task {grid_id} SUCCESS 100%$", made.stderr, re.M), made.stderr
    up = subprocess.run([MJQ, "action", grid_id, "U2", "--wait", "--out", "up.png"], env=stack_env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    upscale_id = up.stdout.split()[0]
    fetched = subprocess.run([MJQ, "fetch", upscale_id], env=stack_env, cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
    assert '"action": "UPSCALE"' in fetched.stdout and '"status": "SUCCESS"' in fetched.stdout
    assert decode_png(tmp_path / "up.png").width > 0


def test_client_errors_are_one_line_and_a_non_zero_exit(stack_env, web, tmp_path):
    cases = [
        ([MJQ, "fetch", "987654321"], stack_env, "task 987654321 not found (code 3)"),
        ([MJQ, "imagine", ""], stack_env, "code 4"),
        ([MJQ, "imagine", "a fox [sim:banned]", "--wait"], stack_env, "FAILURE: "),
        ([MJQ, "fetch", "1"], {**stack_env, "MJQ_URL": "http://127.0.0.1:9"}, "cannot reach mjq at"),
    ]
    for argv, env, expected in cases:
        done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode != 0 and last.startswith("mjq: ") and expected in last, done.stderr
        assert "Traceback" not in done.stderr
