"""P4: in-flight capacity — many 60 s jobs held at once by ONE fast worker process.

For each size: a fast worker with `-c <size>` threads (the threads pool holds one job per
thread while it waits on the upstream), `size` IMAGINE jobs submitted through the mjq app in
this process, then, once every job is IN_PROGRESS (the upstream reported its start), the
worker's RSS and CPU time are sampled for a window while all of them wait. The worker is
killed afterwards; the jobs need not finish.

The simulator reports no progress steps here (MJQ_SIM_PROGRESS_STEPS=0): a progress step
makes the simulator render the picture (Pillow, ~0.15 CPU-s), which is the stand-in
upstream's work, not mjq's waiting. The cost of each mjq event is P3's business.
"""
from __future__ import annotations

import time
from collections import Counter

from sqlalchemy import func, select

from app import protocol
from app.models import Task, now_ms
from bench.harness import Api, BenchError, Stack, measure_usage
from bench.report import Row, Section, mib
from workers import queues

SIZES = (500, 2000)
JOB_SECONDS = 60
WINDOW_SECONDS = 20
#: The window is cut short to end this long before the first job's end, and needs at least MIN_WINDOW_SECONDS.
END_MARGIN_SECONDS = 3
MIN_WINDOW_SECONDS = 5
TARGET_RSS_BYTES = 400 * 2**20
TARGET_CPU_CORES = 0.10
#: Most seconds to wait for every job to be IN_PROGRESS (the last one starts 4.8 s after its submit).
START_TIMEOUT_SECONDS = 40


def hold(stack: Stack, size: int) -> tuple[int, float, int, float, str, float]:
    """(peak RSS bytes, CPU cores, jobs still in flight at the end, seconds until every job started,
    the failures' reasons, seconds measured)."""
    stack.reset()
    env = stack.env(MJQ_SIM_JOB_SECONDS=JOB_SECONDS, MJQ_SIM_PROGRESS_STEPS=0, MJQ_WORKER_CONCURRENCY=size)
    worker = stack.worker(queues.FAST, "fast", env, concurrency=size)
    api = Api(env)
    try:
        start = time.monotonic()
        for _ in range(size):
            api.submit()
        # Every job started (or failed: a failure is reported, not waited for).
        stack.wait_count([protocol.IN_PROGRESS, *protocol.TERMINAL_STATUSES], size, START_TIMEOUT_SECONDS,
                         f"all {size} jobs to be in progress", interval=0.5)
        ramp = time.monotonic() - start
        # The window must end before the first job reaches its end (and the simulator draws it).
        with stack.session_factory() as session:
            first_start_ms = session.scalar(select(func.min(Task.start_time))) or now_ms()
        left = (first_start_ms + JOB_SECONDS * 1000 - now_ms()) / 1000.0 - END_MARGIN_SECONDS
        if left < MIN_WINDOW_SECONDS:
            raise BenchError(f"all {size} jobs were in flight only {ramp:.0f} s after the first submit: no time "
                             f"left to measure before the first one ends (the machine is too busy)")
        usage = measure_usage([worker.pid], min(WINDOW_SECONDS, left))
        still = stack.count([protocol.IN_PROGRESS])
        reasons = Counter(t.fail_reason for t in stack.tasks() if t.status == protocol.FAILURE)
    finally:
        api.close()
        stack.stop(worker, kill=True)
    stack.reset()
    failures = "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common(3))
    return usage.rss_bytes, usage.cpu_cores, still, ramp, failures, usage.seconds


def run(stack: Stack) -> Section:
    section = Section("P4", "in-flight capacity of one fast worker process")
    for size in SIZES:
        try:
            rss, cpu, still, ramp, failures, window = hold(stack, size)
        except BenchError as exc:
            section.error = f"{size} jobs: {exc}"
            section.notes.append(section.error)
            continue
        held = f"{size} jobs in flight" if still == size else f"{size} jobs submitted, {still} in flight"
        section.rows += [
            Row("P4", f"{held}: worker RSS", mib(rss), target=f"≤ {mib(TARGET_RSS_BYTES)}",
                met=rss <= TARGET_RSS_BYTES and still == size),
            Row("P4", f"{held}: worker CPU while they wait", f"{cpu * 100:.1f}% of a core",
                target=f"≤ {TARGET_CPU_CORES:.0%} of a core", met=cpu <= TARGET_CPU_CORES and still == size),
        ]
        section.notes.append(
            f"{size} jobs: one `celery worker -Q mj.fast -P threads -c {size}`; every job started "
            f"{ramp:.0f} s after the first submit; sampled for {window:.0f} s; {still} in flight at the end "
            f"of the window{'; failed: ' + failures if failures else ''}")
        if still != size:
            section.error = f"only {still} of {size} jobs were in flight at the end of the window"
    section.notes += [
        f"MJQ_SIM_JOB_SECONDS={JOB_SECONDS}, MJQ_SIM_PROGRESS_STEPS=0; RSS = the worker process (no children "
        "under the threads pool), CPU = its user + system time over the window; submits come from the mjq app "
        "in this benchmark process, so no web process runs",
    ]
    return section
