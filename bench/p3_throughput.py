"""P3: completed IMAGINE jobs/s through the whole pipeline, beside a bare Celery round trip.

The pipeline: submit (the mjq app in this process: row, commit, message) → `mj.execute` on
a fast worker → claim → upstream submit → start, 3 progress events, success (each a guarded
row update and a publish) with the simulator at zero latency. Jobs/s = jobs / (last
`finishTime` − first submit).

The baseline sends a no-op task (`bench/noop_task.py`) to the same queue, through the same
Celery app settings, to the same worker command (threads pool, same concurrency); tasks/s =
tasks / (time the queue and its unacked set were both empty − first send).

Both run with 1 and then 2 worker processes. Two last passes (1 and 2
processes) repeat the pipeline with the simulator drawing 16-px instead of 512-px cells
(`bench/small_images.py`): they show what mjq itself costs per job once the stand-in
upstream's Pillow work is out of the way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from app import protocol
from bench.harness import Api, BenchError, CpuMeter, CpuPerItem, Stack, cpu_budget_ms
from bench.noop_task import NOOP
from bench.report import Row, Section, per_second, ratio
from config import Settings
from workers import queues
from workers.celery_app import make_celery

NOOP_TASKS = 3000
#: Jobs per pipeline pass with the real renderer (~0.3 CPU-s each) and with small images.
JOBS = 60
JOBS_SMALL_IMAGES = 300
PROGRESS_STEPS = 3
TARGET_SHARE = 0.3
TIMEOUT_SECONDS = 120


def _workers(stack: Stack, env: dict[str, str], count: int, include: str | None = None) -> list[int]:
    return [stack.worker(queues.FAST, f"fast{n}", env, include=include).pid for n in range(count)]


@dataclass
class Baseline:
    """One bare Celery pass: tasks/s and the CPU each task cost."""

    rate: float
    cpu: CpuPerItem


def noop_rate(stack: Stack, processes: int) -> Baseline:
    """Bare Celery tasks/s with `processes` worker processes."""
    stack.reset()
    env = stack.env()
    workers = _workers(stack, env, processes, include="bench.noop_task")
    celery = make_celery(Settings.from_env(env))
    try:
        meter = CpuMeter(stack, workers)
        start = time.monotonic()
        for _ in range(NOOP_TASKS):
            celery.send_task(NOOP, queue=queues.FAST, routing_key=queues.FAST)
        deadline = start + TIMEOUT_SECONDS
        # Late acks: a message leaves `unacked` only after its task returned.
        while stack.redis.llen(queues.FAST) or stack.redis.hlen("unacked"):
            if time.monotonic() > deadline:
                raise BenchError(f"no-op tasks still queued after {TIMEOUT_SECONDS}s")
            time.sleep(0.002)
        return Baseline(NOOP_TASKS / (time.monotonic() - start), meter.per(NOOP_TASKS))
    finally:
        celery.close()
        stack.stop_all()


@dataclass
class Pass:
    """One pipeline pass: jobs/s (ended jobs, whatever their outcome) and the failures among them."""

    rate: float
    failed: int
    reason: str | None
    cpu: CpuPerItem


def pipeline_rate(stack: Stack, processes: int, jobs: int, include: str | None = None) -> Pass:
    """Completed IMAGINE jobs/s with `processes` worker processes."""
    stack.reset()
    env = stack.env(MJQ_SIM_JOB_SECONDS=0, MJQ_SIM_PROGRESS_STEPS=PROGRESS_STEPS)
    workers = _workers(stack, env, processes, include=include)
    api = Api(env)
    try:
        meter = CpuMeter(stack, workers)
        first_ms = time.time() * 1000.0
        for _ in range(jobs):
            api.submit()
        stack.wait_count(protocol.TERMINAL_STATUSES, jobs, TIMEOUT_SECONDS, "every job to end")
        cpu = meter.per(jobs)
    finally:
        api.close()
        stack.stop_all()
    tasks = stack.tasks()
    failed = [t for t in tasks if t.status != protocol.SUCCESS]
    last_ms = max(t.finish_time or 0 for t in tasks)
    return Pass(jobs / ((last_ms - first_ms) / 1000.0), len(failed), failed[0].fail_reason if failed else None, cpu)


def _cpu(cpu: CpuPerItem, rate: float) -> str:
    return (f"worker {cpu.worker_ms:.1f} ms ({cpu.worker_ms * rate / 1000:.2f} of a core at {rate:.0f}/s), "
            f"PostgreSQL {cpu.postgres_ms:.1f} ms, Redis {cpu.redis_ms:.2f} ms")


def budget_note(noop_rate: float, small: CpuPerItem) -> str:
    """What the target leaves per job: the cores over the target's rate, and one GIL-bound process's share."""
    rate = TARGET_SHARE * noop_rate
    cores, budget = cpu_budget_ms(rate)
    return (f"the target's CPU budget: at {TARGET_SHARE:.0%} of bare Celery with 1 process ({rate:.0f} jobs/s) the "
            f"{cores} cores give {budget:.1f} ms per job to every process together, and a worker "
            f"process, which its GIL holds to one core, {budget / cores:.1f} ms; with 16-px cells PostgreSQL and Redis "
            f"took {small.postgres_ms + small.redis_ms:.1f} ms per job by themselves (its row writes and events), and "
            f"the worker {small.worker_ms:.1f} ms")


def run(stack: Stack) -> Section:
    section = Section("P3", "pipeline throughput")
    passes: dict[int, tuple[Pass, Baseline]] = {}
    for processes in (1, 2):
        passes[processes] = (pipeline_rate(stack, processes, JOBS), noop_rate(stack, processes))
    small = {n: pipeline_rate(stack, n, JOBS_SMALL_IMAGES, include="bench.small_images") for n in (1, 2)}
    stack.reset()
    for processes, (jobs, noop) in passes.items():
        section.rows.append(Row(
            "P3", f"IMAGINE jobs/s, {processes} worker process{'es' if processes > 1 else ''}",
            per_second(jobs.rate, "jobs"), per_second(noop.rate, "tasks"), ratio(jobs.rate, noop.rate),
            f"≥ {TARGET_SHARE:.0%}", jobs.rate / noop.rate >= TARGET_SHARE and not jobs.failed,
        ))
    noop1 = passes[1][1]
    for processes, pipeline in small.items():
        noop = passes[processes][1]
        section.rows.append(Row(
            "P3", f"IMAGINE jobs/s, {processes} process{'es' if processes > 1 else ''}, simulator draws 16-px cells",
            per_second(pipeline.rate, "jobs"), per_second(noop.rate, "tasks"), ratio(pipeline.rate, noop.rate)))
    settings = Settings.from_env(stack.env())
    failures = [(n, p) for n, p in [(JOBS, passes[1][0]), (JOBS, passes[2][0]), (JOBS_SMALL_IMAGES, small[1]),
                                    (JOBS_SMALL_IMAGES, small[2])] if p.failed]
    section.notes += [
        f"MJQ_SIM_JOB_SECONDS=0, MJQ_SIM_PROGRESS_STEPS={PROGRESS_STEPS}; {JOBS} jobs per pass "
        f"({JOBS_SMALL_IMAGES} with small images), {NOOP_TASKS} no-op tasks per baseline pass",
        f"workers: `celery worker -Q mj.fast -P threads -c {settings.worker_concurrency}` (the Procfile's "
        "command, via tests/processes.py), 1 then 2 processes; submits from the mjq app in this process",
        f"scaling 1 → 2 processes: pipeline ×{passes[2][0].rate / passes[1][0].rate:.2f} (16-px cells ×"
        f"{small[2].rate / small[1].rate:.2f}), bare Celery ×{passes[2][1].rate / noop1.rate:.2f} (2 cores shared "
        "with PostgreSQL, Redis and this process; with the real renderer one process already keeps both cores "
        "busy, since Pillow draws and encodes without the GIL)",
        "CPU per job, 1 process (user + system of the worker process, the stack's PostgreSQL backends and the "
        f"Redis server, first submit to last end): real renderer {_cpu(passes[1][0].cpu, passes[1][0].rate)}; "
        f"16-px cells {_cpu(small[1].cpu, small[1].rate)}; per bare Celery task {_cpu(noop1.cpu, noop1.rate)}. "
        "The submits' own CPU in this process is not counted (P1 measures it)",
        budget_note(noop1.rate, small[1].cpu),
    ]
    if failures:
        section.error = "jobs failed: " + "; ".join(f"{p.failed} of {n} ({p.reason})" for n, p in failures)
    return section
