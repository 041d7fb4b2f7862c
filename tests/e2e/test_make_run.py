"""The `make run` stack, tried as a new user would: the README's curl line, then polling fetch."""
from __future__ import annotations

import io
import os
import re
import signal
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.processes import ROOT, Process, free_port, make_run_stack, wait_for

pytestmark = pytest.mark.e2e

SECRET = "S"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """`make run` with only MJQ_API_SECRET and ports set: private Redis, SQLite, simulator accounts."""
    data_dir = tmp_path_factory.mktemp("make-run")
    with make_run_stack("make-run", data_dir, {"MJQ_API_SECRET": SECRET, "MJQ_WORKER_CONCURRENCY": "20"}) as (
            base, proc):
        flower_port = next(line.split(":")[-1].strip() for line in proc.output().splitlines()
                           if "Flower: http://127.0.0.1:" in line)
        yield {"base": base, "proc": proc, "data_dir": data_dir, "flower": f"http://127.0.0.1:{flower_port}"}


def submit(base: str, prompt: str, prefix: str = "/mj") -> dict:
    return requests.post(f"{base}{prefix}/submit/imagine", data=f'{{"prompt":"{prompt}"}}',
                         headers={"mj-api-secret": SECRET}, timeout=10).json()


def test_the_readme_curl_line_runs_a_job_to_a_16_9_png_with_nine_buttons(stack):
    base = stack["base"]
    printed = re.search(r"curl -s .*", stack["proc"].output()).group(0)
    assert f"-H 'mj-api-secret: {SECRET}'" in printed and "a red fox --ar 16:9" in printed
    assert requests.post(f"{base}/mj/submit/imagine", json={"prompt": "x"}, timeout=10).status_code == 401
    body = submit(base, "a red fox --ar 16:9")
    assert body["code"] == 1
    seen: list[tuple[str, str | None]] = []
    start = time.monotonic()
    task: dict = {}
    while time.monotonic() - start < 15:
        task = requests.get(f"{base}/mj/task/{body['result']}/fetch", headers={"mj-api-secret": SECRET},
                            timeout=5).json()
        if not seen or seen[-1] != (task["status"], task["progress"]):
            seen.append((task["status"], task["progress"]))
        if task["status"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.15)
    statuses = [s for s, _ in seen]
    assert statuses[-1] == "SUCCESS" and seen[-1][1] == "100%", seen
    assert "SUBMITTED" in statuses and statuses.index("SUBMITTED") < statuses.index("IN_PROGRESS"), seen
    percents = [int(p[:-1]) for s, p in seen if s == "IN_PROGRESS" and p and p != "0%"]
    assert len(percents) >= 2 and percents == sorted(percents), seen
    png = requests.get(task["imageUrl"], timeout=10)
    assert png.headers["Content-Type"] == "image/png" and png.headers["Access-Control-Allow-Origin"] == "*"
    img = Image.open(io.BytesIO(png.content))
    img.verify()
    assert round(img.width / img.height, 2) == round(16 / 9, 2)
    labels = [b["label"] or b["emoji"] for b in task["buttons"]]
    assert labels == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]


def test_a_relax_job_runs_on_the_normal_worker_and_a_fast_one_on_the_fast_worker(stack):
    relax = submit(stack["base"], "a quiet harbour", "/mj-relax/mj")["result"]
    fast = submit(stack["base"], "a busy harbour", "/mj-fast/mj")["result"]
    proc = stack["proc"]
    for task_id, node, queue in ((relax, "worker-normal", "mj.normal"), (fast, "worker-fast", "mj.fast")):
        pattern = re.compile(rf"^\S+ {node}\.1 +\|.*task {task_id} IMAGINE ran on queue {queue}", re.M)
        wait_for(lambda p=pattern: p.search(proc.output()), 30, f"{node} to run {task_id}")


def test_flower_finds_a_job_by_its_task_id_with_name_and_arguments(stack):
    task_id = submit(stack["base"], "a lantern")["result"]

    def page() -> str | None:
        try:
            resp = requests.get(f"{stack['flower']}/task/{task_id}", timeout=5)
        except requests.RequestException:
            return None
        return resp.text if resp.ok and "mj.execute" in resp.text else None

    html = wait_for(page, 30, "Flower to show the job", interval=0.5)
    assert task_id in html and "IMAGINE" in html


def test_ctrl_c_stops_every_process_of_the_stack(tmp_path: Path):
    """A second stack, stopped with SIGINT: nothing of it keeps running."""
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MJQ_", "DATABASE_URL", "REDIS_URL"))}
    env.update({"MJQ_PORT": str(port), "MJQ_FLOWER_PORT": str(flower_port), "MJQ_DATA_DIR": str(tmp_path)})
    proc = Process("make-run-2", ["make", "-s", "run"], env, tmp_path)
    proc.wait_for_output("mjq is up", timeout=120)
    proc.signal_group(signal.SIGINT)
    assert proc.proc.wait(timeout=60) is not None
    survivors = [line for line in os.popen("ps -eo pid,args").read().splitlines() if str(tmp_path) in line]
    assert survivors == []
    proc.stop()
    assert ROOT.exists()
