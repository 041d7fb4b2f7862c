"""The benchmark tools read their load generators right (no timings are asserted here)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from bench import loadgen
from bench.load import parse_wrk
from bench.report import Row, table
from bench.stats import percentile

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8080/mj/submit/imagine
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.23ms    6.10ms  80.00ms   75.00%
    Req/Sec   290.11     30.02   350.00     70.00%
  Latency Distribution
     50%   13.10ms
     75%   16.00ms
     90%   21.00ms
     99%  812.00us
  2900 requests in 10.01s, 760.00KB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:    289.71
Transfer/sec:     75.93KB
"""


def test_wrk_output_gives_the_rate_the_errors_and_the_percentiles_in_ms():
    load = parse_wrk(WRK_OUTPUT)
    assert (load.requests, load.errors, load.rps) == (2900, 6, 289.71)
    assert load.p50_ms == pytest.approx(13.1) and load.p99_ms == pytest.approx(0.812)


def test_unexpected_wrk_output_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk("wrk: connection refused")


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) != percentile([], 50)  # NaN: no samples is not a latency


def test_the_table_marks_missed_targets_and_leaves_figures_without_target_blank():
    text = table([Row("P1", "a", "1", target="≥ 2", met=False), Row("P3", "b|c", "3")])
    lines = text.splitlines()
    assert lines[2].endswith("| ≥ 2 | **no** |") and lines[3].endswith("| — |  |") and "b\\|c" in lines[3]


@pytest.fixture
def local_server():
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"code":1}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mj/submit/imagine"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("rate", [0.0, 200.0])
def test_the_load_generator_reads_every_keep_alive_answer_of_a_local_server(local_server, rate):
    result = loadgen.run(local_server, b'{"prompt":"x"}', seconds=0.3, connections=2, rate=rate)
    assert result["requests"] > 0 and result["errors"] == 0
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_python_m_bench_webhooks_runs_only_the_webhook_benchmark():
    from bench.__main__ import WEBHOOKS_MODULE, selected

    assert selected(["webhooks"]) == [WEBHOOKS_MODULE]
    assert selected(["p1", "webhooks"]) == ["bench.p1_submit", WEBHOOKS_MODULE]


def _burner(seconds: float) -> subprocess.Popen:
    """A child process that spends about `seconds` of CPU, then waits for its stdin to close."""
    code = (f"import sys, time\nend = time.process_time() + {seconds!r}\n"
            "while time.process_time() < end: pass\nprint('done', flush=True)\nsys.stdin.read()")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_the_cpu_meter_counts_per_item_and_a_backend_that_connects_meanwhile_from_zero():
    from bench.harness import CpuMeter

    worker, late_backend = _burner(0.3), None
    assert worker.stdout is not None and worker.stdout.readline() == "done\n"
    backends: list[int] = []
    stack = SimpleNamespace(pg_backends=lambda: list(backends),
                            redis=SimpleNamespace(info=lambda section: {"process_id": os.getpid()}))
    try:
        meter = CpuMeter(stack, [worker.pid])  # the worker's 0.3 s were spent before: they do not count
        late_backend = _burner(0.4)
        backends.append(late_backend.pid)
        assert late_backend.stdout is not None and late_backend.stdout.readline() == "done\n"
        cpu = meter.per(2)
    finally:
        for proc in (worker, late_backend):
            if proc is not None:
                proc.communicate("")
    assert cpu.worker_ms < 50
    assert 0.4 * 1000 / 2 <= cpu.postgres_ms < 1.0 * 1000 / 2  # the whole life of the late backend, halved


def test_the_budget_notes_give_the_cpu_a_target_leaves_per_item_on_this_machine(monkeypatch):
    from bench import p1_submit, p3_throughput
    from bench.harness import CpuPerItem

    monkeypatch.setattr("psutil.cpu_count", lambda *a, **k: 2)
    # 50 % of 8,000 req/s is 4,000/s: 2 cores give 0.5 ms a request; PostgreSQL and Redis took 0.3 + 0.1
    p1 = p1_submit.budget_note(8000, CpuPerItem(2.0, 0.3, 0.1), CpuPerItem(0.2, 0.0, 0.0))
    assert "(4,000 req/s) the 2 cores give 0.50 ms per request" in p1 and "took 0.40 ms" in p1
    assert "gunicorn workers alone take 0.20 ms" in p1
    # 30 % of 800 tasks/s is 240/s: 8.3 ms a job for the machine, 4.2 ms for one process
    p3 = p3_throughput.budget_note(800, CpuPerItem(13.0, 3.5, 0.9))
    assert "(240 jobs/s) the 2 cores give 8.3 ms per job" in p3 and "which its GIL holds to one core, 4.2 ms" in p3
    assert "took 4.4 ms per job by themselves" in p3 and "the worker 13.0 ms" in p3
