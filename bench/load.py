"""Driving HTTP load from a second process: `wrk` for the peak when installed, else `bench.loadgen`.

Both keep their connections alive. The rate-limited pass always uses `bench.loadgen`
(wrk has no fixed-rate mode), which measures latency from when each request was due.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import ROOT

#: Concurrent keep-alive connections of the load (the default web config has 2 × 8 threads).
CONNECTIONS = 16
#: The peak load opens its connections in this many groups, this many seconds apart.
GROUPS = 4
STAGGER_SECONDS = 0.3
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Load:
    """What one load pass measured."""

    tool: str
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> Load:
    """Read requests/s, errors and the latency distribution from `wrk --latency` output."""
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if not found or not total:
        raise ValueError(f"unexpected wrk output:\n{output}")
    dist = dict((p, _ms(v, u)) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Load("wrk", int(total.group(1)), errors, float(found.group(1)), dist.get("50", float("nan")),
                dist.get("99", float("nan")))


def peak(url: str, body: str, seconds: float, work_dir: Path, connections: int = CONNECTIONS) -> Load:
    """Closed-loop load for `seconds`: the most requests/s the server answers.

    The connections open in GROUPS, STAGGER_SECONDS apart, as arriving clients do: opened in
    one burst, they all land on whichever gunicorn worker wins the accept race, and the
    figure would be one worker's, not the server's. Latencies are the worst group's.
    """
    wrk = shutil.which("wrk")
    if not wrk:
        return paced(url, body, 0.0, seconds, connections, ramp=STAGGER_SECONDS * GROUPS)
    script = work_dir / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = [[{body}]]\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    procs = []
    for _ in range(GROUPS):
        procs.append(subprocess.Popen([wrk, "-t1", f"-c{connections // GROUPS}", f"-d{seconds:.0f}s", "--latency",
                                       "-s", str(script), url], stdout=subprocess.PIPE, text=True))
        time.sleep(STAGGER_SECONDS)
    loads = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        if proc.returncode:
            raise RuntimeError(f"wrk exited with {proc.returncode}:\n{out}")
        loads.append(parse_wrk(out))
    return Load("wrk", sum(x.requests for x in loads), sum(x.errors for x in loads), sum(x.rps for x in loads),
                max(x.p50_ms for x in loads), max(x.p99_ms for x in loads))


def paced(url: str, body: str, rate: float, seconds: float, connections: int = CONNECTIONS, ramp: float = 0.0
          ) -> Load:
    """`bench.loadgen` at `rate` requests/s (0 = closed loop, connections opened over `ramp` s) for `seconds`."""
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", url, "--body", body, "--seconds", str(seconds),
                          "--connections", str(connections), "--rate", str(rate), "--ramp", str(ramp)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True, cwd=ROOT)
    data = json.loads(out.stdout)
    return Load("bench.loadgen", int(data["requests"]), int(data["errors"]), float(data["rps"]),
                float(data["p50_ms"]), float(data["p99_ms"]))
