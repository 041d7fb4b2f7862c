"""P2: how long a job waits between steps that mjq, not the upstream, is responsible for.

- dispatch: from the moment the submit answer is complete to the simulator driver's
  `submit` call. The simulator stamps the call into the upstream reference it returns
  (`sim:<nonce>:<epoch ms>`), which the executor stores as `upstream_id`; both clocks are
  this machine's wall clock. Jobs are paced so the worker always has free threads and the
  accounts free slots.
- completion → webhook: from the task's `finishTime` (set when the driver reports the
  result, before the row is written) to the arrival of the SUCCESS POST at a local receiver;
  the `mj.webhooks` worker process delivers it.

Submits go through the mjq app inside this process (the same code as the web process,
without HTTP); the fast and webhook workers are real `celery worker` processes. The fast
worker's simulator draws small pictures (`bench/small_images.py`) so the stand-in
upstream's Pillow work does not fill the cores the dispatch path runs on.
"""
from __future__ import annotations

import time

from app import protocol
from bench.harness import Api, Stack
from bench.receiver import Receiver
from bench.report import Row, Section, ms
from bench.stats import percentile

JOBS = 200
#: Seconds between submits: about 5 jobs in flight, far below the worker's threads and slots.
INTERVAL_SECONDS = 0.2
JOB_SECONDS = 1.0
#: Webhook worker threads (the Procfile's `worker-webhooks` uses 20).
WEBHOOK_CONCURRENCY = 20
TARGET_DISPATCH_P50_MS = 15.0
TARGET_DISPATCH_P99_MS = 60.0
TARGET_WEBHOOK_P50_MS = 50.0


def upstream_submit_ms(upstream_id: str | None) -> float | None:
    """The epoch ms the simulator stamped into its reference, or None for another driver."""
    if not upstream_id or not upstream_id.startswith("sim:"):
        return None
    return float(upstream_id.rsplit(":", 1)[1])


def run(stack: Stack) -> Section:
    section = Section("P2", "dispatch and completion → webhook latency")
    stack.reset()
    env = stack.env(MJQ_SIM_JOB_SECONDS=JOB_SECONDS, MJQ_SIM_PROGRESS_STEPS=0)
    receiver = Receiver()
    api = Api(env)
    try:
        # 16-px cells: at 5 jobs/s the real renderer (~0.3 CPU-s per job) would fill both cores,
        # and P2 would time Pillow instead of mjq's dispatch.
        stack.worker("mj.fast", "fast", env, include="bench.small_images")
        stack.worker("mj.webhooks", "webhooks", env, concurrency=WEBHOOK_CONCURRENCY)
        answered: dict[int, float] = {}
        start = time.monotonic()
        for i in range(JOBS):
            delay = start + i * INTERVAL_SECONDS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            task_id, at = api.submit(hook=receiver.url)
            answered[task_id] = at
        stack.wait_count(protocol.TERMINAL_STATUSES, JOBS, 60, "every job to end")
        deadline = time.monotonic() + 30
        while len(receiver.of_status(protocol.SUCCESS)) < JOBS and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        api.close()
        receiver.close()
        stack.stop_all()

    tasks = stack.tasks()
    stamps = {t.id: upstream_submit_ms(t.upstream_id) for t in tasks if t.id in answered}
    dispatch = [stamp - answered[task_id] for task_id, stamp in stamps.items() if stamp is not None]
    succeeded = sum(1 for t in tasks if t.status == protocol.SUCCESS)
    hooks = receiver.of_status(protocol.SUCCESS)
    webhook = [d.arrived_ms - d.task["finishTime"] for d in hooks.values() if d.task.get("finishTime")]
    stack.reset()

    d50, d99, w50 = percentile(dispatch, 50), percentile(dispatch, 99), percentile(webhook, 50)
    section.rows += [
        Row("P2", f"dispatch p50 ({len(dispatch)} jobs)", ms(d50), target=f"≤ {TARGET_DISPATCH_P50_MS:.0f} ms",
            met=d50 <= TARGET_DISPATCH_P50_MS),
        Row("P2", "dispatch p99", ms(d99), target=f"≤ {TARGET_DISPATCH_P99_MS:.0f} ms",
            met=d99 <= TARGET_DISPATCH_P99_MS),
        Row("P2", f"completion → webhook p50 ({len(webhook)} hooks)", ms(w50),
            f"p99 {ms(percentile(webhook, 99))}", target=f"≤ {TARGET_WEBHOOK_P50_MS:.0f} ms",
            met=w50 <= TARGET_WEBHOOK_P50_MS if webhook else False),
    ]
    section.notes += [
        f"{JOBS} IMAGINE jobs submitted every {INTERVAL_SECONDS * 1000:.0f} ms through the in-process app, each "
        f"with notifyHook = a local receiver; MJQ_SIM_JOB_SECONDS={JOB_SECONDS:g}, MJQ_SIM_PROGRESS_STEPS=0; one "
        f"fast worker (threads, default concurrency) and one mj.webhooks worker (-c {WEBHOOK_CONCURRENCY})",
        "the fast worker's simulator draws 16-px cells (`bench/small_images.py`): with the real renderer "
        "(~0.3 CPU-s per job here) 5 jobs/s fill both cores and the figure would be Pillow's, not mjq's",
        "dispatch = the simulator's own stamp of its submit call (in upstream_id) − the time the submit answer "
        f"was complete; max {ms(max(dispatch, default=float('nan')))}",
        "completion → webhook = arrival of the SUCCESS POST − the task's finishTime (stamped when the driver "
        f"reports the result); {len(hooks)} of {JOBS} SUCCESS webhooks arrived, {succeeded} jobs succeeded",
    ]
    if succeeded < JOBS or len(hooks) < JOBS:
        section.error = f"{succeeded}/{JOBS} jobs succeeded, {len(hooks)}/{JOBS} SUCCESS webhooks arrived"
    return section
