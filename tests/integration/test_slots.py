"""Account slots across real processes on real Redis: the acceptance figures of T2.1–T2.3 and T2.6.

Each test prints the figure it measured (`pytest -s` shows them) and asserts the target.
The slot holders are `python -m tests.integration.slot_worker` processes (see that module).
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest
import redis as redis_lib
from sqlalchemy import select, update

from app import protocol
from app.models import Account, Task, now_ms
from tests.integration import slot_worker
from tests.processes import Process, wait_for
from workers import queues
from workers.drivers.simulator import STALE_CALLS_KEY, SUBMISSIONS_KEY
from workers.scheduler import Candidate, Lease, Scheduler

pytestmark = pytest.mark.integration

POOL = "fast"


def start_slot_worker(name: str, command: str, args: list[str], log_dir: Path) -> Process:
    """Start `python -m tests.integration.slot_worker <command> <args>` as its own process group."""
    return Process(name, [sys.executable, "-m", "tests.integration.slot_worker", command, *args],
                   dict(os.environ), log_dir)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stopped_at_end() -> Iterator[list[Process]]:
    """Processes a test started; any still running at the end (a failed test) are killed."""
    procs: list[Process] = []
    yield procs
    for proc in procs:
        proc.signal_group(signal.SIGCONT)
        proc.stop(timeout=5)


# -- T2.1 ---------------------------------------------------------------------------------------

def busy_fraction(intervals: list[tuple[float, float]], start: float, end: float, slots: int) -> float:
    """Σ of the parts of `intervals` inside [start, end) / (`slots` × (end − start)); times in seconds."""
    busy = sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
    return busy / (slots * (end - start))


def test_four_processes_of_fifty_threads_never_put_more_than_three_calls_in_flight_and_keep_the_slots_busy(
        redis_url, redis_client, log_dir, tmp_path, stopped_at_end):
    """T2.1: 4 processes × 50 threads, 10,000 acquisitions on ONE account with limit 3.

    Each acquisition is admit → acquire → check → a call to a fake upstream that holds ~12 ms
    → release. The fake upstream counts its own in-flight calls in Redis (INCR plus an atomic
    max in one Lua script, DECR when the call ends): the peak is the upstream's view.

    Utilization is measured over the backlog, from the first grant until fewer than 4 threads
    are left (after that nobody waits, so an idle slot is no loss), as Σ busy time / (3 × that
    wall time), two ways:
    - slots held: from `acquire` returning to `release` returning, per acquisition. This is
      the scheduler's figure; its only loss is the hand-over (release → wake-up → grant).
      This is the one asserted: ≥ 90 % over the backlog (reliability.md's bound) and ≥ 85 % in
      its worst second, which catches a stall (one of 3 slots idle for a second is 67 %) but
      not a slow host: on 2026-12-07's, whose bare baselines ran at ~40 % of the day before,
      one run in four measured 92.7 % over the backlog and 89.2 % in its worst second.
    - upstream busy: from the INCR to the DECR on Redis's clock. It also loses the job's own
      round trips around the call (check, INCR, DECR ≈ 1-2 ms on a loaded host), which cost
      ~10–15 % of a 12 ms call but nothing measurable of a real 30-60 s Midjourney job; printed.
    The worst 1-second window of each is printed too, to show the figure holds throughout.
    """
    processes, threads, per_thread, limit, hold_ms = 4, 50, 50, 3, 12.0
    account, ns = unique("t21"), unique("mjq:test:t21")
    reports = [tmp_path / f"hammer-{i}.json" for i in range(processes)]
    for i in range(processes):
        stopped_at_end.append(start_slot_worker(f"hammer-{i}", "hammer", [
            "--redis", redis_url, "--account", account, "--ns", ns, "--index", str(i), "--threads", str(threads),
            "--count", str(per_thread), "--limit", str(limit), "--hold-ms", str(hold_ms),
            "--report", str(reports[i]),
        ], log_dir))
    wait_for(lambda: int(redis_client.get(f"{ns}:ready") or 0) == processes, 60, "the hammer processes to start")
    started = time.monotonic()
    redis_client.set(f"{ns}:go", 1)
    for proc in stopped_at_end:
        assert proc.proc.wait(timeout=120) == 0, proc.output()[-3000:]
    elapsed = time.monotonic() - started

    data = [json.loads(path.read_text()) for path in reports]
    errors = [e for d in data for e in d["errors"]]
    calls = [tuple(c) for d in data for c in d["calls"]]
    finished = sorted(t for d in data for t in d["finished"])
    peak = int(redis_client.get(f"{ns}:inflight-max") or 0)
    first, last = min(c[0] for c in calls), max(c[3] for c in calls)
    backlog_end = finished[-(limit + 1)]  # from here on at most `limit` threads are left
    held = [(granted, released) for granted, _, _, released in calls]
    upstream = [(began, ended) for _, began, ended, _ in calls]
    slot_use, upstream_use = (busy_fraction(x, first, backlog_end, limit) for x in (held, upstream))
    seconds = [t for t in range(int(first) + 1, int(backlog_end)) if t + 1.0 <= backlog_end]
    slot_min, upstream_min = (min(busy_fraction(x, t, t + 1.0, limit) for t in seconds) for x in (held, upstream))
    print(f"\nT2.1 max in-flight {peak} (limit {limit}); utilization over the backlog ({backlog_end - first:.1f} s): "
          f"slots held {slot_use:.1%} (worst second {slot_min:.1%}), upstream busy {upstream_use:.1%} "
          f"(worst second {upstream_min:.1%}); {len(calls)} acquisitions in {elapsed:.1f} s "
          f"(first grant to last release {last - first:.1f} s, hold {hold_ms:.0f} ms)")
    assert errors == []
    assert len(calls) == processes * threads * per_thread == 10_000
    assert peak <= limit
    assert slot_use >= 0.90 and slot_min >= 0.85  # over the whole backlog, and no second of it stalled


# -- T2.2 and T2.3 ------------------------------------------------------------------------------

LEASE_SECONDS = 3.0


def new_task_id() -> int:
    """A task id no other test uses (the wake-up lists are keyed by task id alone)."""
    return int(uuid.uuid4().int % 10**15) + 10**15


def key_value(redis_client: redis_lib.Redis, key: str, timeout: float, what: str) -> str:
    """The value of `key` once a slot worker wrote it (polled every 10 ms, so a SIGSTOP follows fast)."""
    return cast(bytes, wait_for(lambda: redis_client.get(key), timeout, what, interval=0.01)).decode()


def slots(redis_url: str) -> Scheduler:
    """A scheduler in the test process with the short lease of these tests."""
    client = redis_lib.Redis.from_url(redis_url, socket_timeout=30)
    return Scheduler(client, lease_seconds=LEASE_SECONDS)


class Waiter:
    """Admits a task behind the current holder, then blocks in `acquire` on a thread."""

    def __init__(self, sched: Scheduler, account: str, task_id: int) -> None:
        self.sched, self.account, self.task_id = sched, account, task_id
        self.submit_ms = sched.clock()
        self.admission = sched.admit([Candidate(account, 1, 10)], POOL, task_id, self.submit_ms)
        self.lease: Lease | None = None
        self.granted_at = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.lease = self.sched.acquire(self.account, POOL, self.task_id, 1, self.submit_ms, wait_seconds=30)
            self.granted_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.error = exc

    def wait(self, timeout: float) -> Lease:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.lease is not None, f"no slot within {timeout} s"
        return self.lease


def test_the_slot_of_a_holder_killed_with_sigkill_is_granted_again_within_the_lease_ttl_plus_one_second(
        redis_url, redis_client, log_dir, stopped_at_end):
    """T2.2: the holder renews its lease (the waiter stays blocked past a whole TTL), then dies."""
    account, ns = unique("t22"), unique("mjq:test:t22")
    holder = start_slot_worker("t22-holder", "hold", [
        "--redis", redis_url, "--account", account, "--ns", ns, "--lease", str(LEASE_SECONDS),
        "--task", str(new_task_id()),
    ], log_dir)
    stopped_at_end.append(holder)
    old_token = int(key_value(redis_client, f"{ns}:holder", 30, "the holder to take the slot"))
    waiter = Waiter(slots(redis_url), account, new_task_id())
    assert (waiter.admission.code, waiter.admission.ahead) == (22, 0)
    time.sleep(LEASE_SECONDS + 1)
    assert waiter.lease is None and waiter.thread.is_alive(), "the slot was granted while its holder was alive"
    killed = time.monotonic()
    holder.signal_group(signal.SIGKILL)
    lease = waiter.wait(timeout=LEASE_SECONDS + 5)
    delay = waiter.granted_at - killed
    print(f"\nT2.2 slot granted again {delay:.2f} s after kill -9 of its holder (lease TTL {LEASE_SECONDS:.0f} s, "
          f"target <= {LEASE_SECONDS + 1:.0f} s); fencing token {old_token} -> {lease.token}")
    assert delay <= LEASE_SECONDS + 1
    assert lease.token > old_token
    waiter.sched.release(lease)


@pytest.mark.parametrize("pause_at, expected", [("before-check", slot_worker.STOPPED_AT_CHECK),
                                                ("after-check", slot_worker.REFUSED_BY_FENCE)])
def test_a_holder_stopped_past_its_lease_makes_no_upstream_call_under_its_stale_token(
        redis_url, redis_client, log_dir, stopped_at_end, pause_at, expected):
    """T2.3: SIGSTOP a holder right before (or right after) its pre-call `check` for longer than the
    lease, let another holder take the slot and call the upstream, then SIGCONT. The stale holder
    either stops at `check` or is refused by the simulated upstream's fence; it is never accepted."""
    account, ns = unique("t23"), unique("mjq:test:t23")
    stale_task, new_task = new_task_id(), new_task_id()
    refused_before = int(redis_client.get(STALE_CALLS_KEY) or 0)
    proc = start_slot_worker("t23-stale", "stale", [
        "--redis", redis_url, "--account", account, "--ns", ns, "--lease", str(LEASE_SECONDS),
        "--task", str(stale_task), "--pause-at", pause_at, "--pause", "2",
    ], log_dir)
    stopped_at_end.append(proc)
    old_token = int(key_value(redis_client, f"{ns}:holder", 30, "the first holder to take the slot"))
    proc.signal_group(signal.SIGSTOP)
    stopped = time.monotonic()
    waiter = Waiter(slots(redis_url), account, new_task)
    lease = waiter.wait(timeout=LEASE_SECONDS + 5)
    assert lease.token > old_token
    slot_worker.simulator(redis_client).submit(slot_worker.upstream_job(lease))
    time.sleep(max(0.0, stopped + LEASE_SECONDS + 0.5 - time.monotonic()))  # stopped for longer than the lease
    assert redis_client.get(f"{ns}:outcome") is None, "the first holder went on before it was stopped"
    paused = time.monotonic() - stopped
    proc.signal_group(signal.SIGCONT)
    outcome = key_value(redis_client, f"{ns}:outcome", 15, "the stale holder to finish")
    assert proc.proc.wait(timeout=10) == 0, proc.output()[-2000:]
    submissions = redis_client.hmget(SUBMISSIONS_KEY, [str(stale_task), str(new_task)])
    stale_calls, new_calls = (int(n or 0) for n in submissions)
    refused = int(redis_client.get(STALE_CALLS_KEY) or 0) - refused_before
    print(f"\nT2.3 ({pause_at}) holder stopped {paused:.1f} s (lease TTL {LEASE_SECONDS:.0f} s); upstream "
          f"accepted {stale_calls} calls under the stale token {old_token} and {new_calls} under the new token "
          f"{lease.token}; refused {refused} stale calls; the stale holder: {outcome}")
    assert (stale_calls, new_calls) == (0, 1)
    assert outcome == expected
    assert refused == (1 if expected == slot_worker.REFUSED_BY_FENCE else 0)
    waiter.sched.release(lease)


# -- T2.6 ---------------------------------------------------------------------------------------

BACKLOG_JOBS = 1000
FAST_JOBS = 20
#: Clients submitting the backlog at once (each submit waits on PostgreSQL and Redis round trips).
SUBMIT_THREADS = 4
_clients = threading.local()


def submit_relax(app, account_id: str, i: int) -> dict:
    """One RELAX submit routed to `account_id`, from this thread's own test client."""
    if not hasattr(_clients, "client"):
        _clients.client = app.test_client()
    return _clients.client.post("/mj-relax/mj/submit/imagine", json={
        "prompt": f"backlog {i}", "accountFilter": {"instanceId": account_id}}).get_json()


def add_shared_account(session_factory, account_id: str, relax_slots: int, queue_size: int) -> None:
    """A simulator account running both pools (a fast slot per FAST job of the test, so they do
    not queue behind each other; `relax_slots` relax slots); only `accountFilter.instanceId`
    sends work to it here."""
    now = now_ms()
    with session_factory() as session:
        session.add(Account(
            id=account_id, name=account_id, driver="simulator", settings={}, modes=["FAST", "TURBO", "RELAX"],
            fast_concurrency=FAST_JOBS,
            relax_concurrency=relax_slots, queue_size=queue_size, weight=1, remix=False,
            bot_types=list(protocol.BOT_TYPES), timeout_minutes=5, enable=True, created_at=now, updated_at=now,
        ))
        session.commit()


def drain_backlog(session_factory, redis_client: redis_lib.Redis, account_id: str, task_ids: list[int]) -> None:
    """Leave the session's workers idle: no message on mj.normal, no job of `account_id` waiting or running.

    The account is disabled and its rows cancelled, so a worker that still picks one up (or is
    granted a slot for one) stops at once; its stale FIFO entries are dropped and its blocked
    waiters woken, so they see that now instead of after their next timeout.
    """
    with session_factory() as session:
        session.execute(update(Account).where(Account.id == account_id).values(enable=False))
        session.execute(update(Task).where(Task.account_id == account_id, Task.status.in_(protocol.OPEN_STATUSES))
                        .values(status=protocol.CANCEL))
        session.commit()
    holders, waiting, _ = (f"mjq:sched:{account_id}:relax:{k}" for k in ("holders", "waiting", "fence"))
    redis_client.delete(queues.NORMAL, waiting)
    pipe = redis_client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.lpush(f"mjq:sched:wake:{task_id}", 1)
        pipe.expire(f"mjq:sched:wake:{task_id}", 60)
    pipe.execute()
    wait_for(lambda: not redis_client.hlen("unacked") and not redis_client.zcard(waiting)
             and not redis_client.zcount(holders, now_ms(), "+inf"), 60, "the workers to let go of the backlog")


def test_fast_jobs_start_within_5_s_p95_while_1000_relax_jobs_are_queued(
        api, workers, session_factory, redis_client):
    """T2.6 on the real pipeline: 1,000 RELAX jobs queue on an account with 2 relax slots (1 s jobs),
    then 20 FAST jobs are submitted to the SAME account (its fast slots); each FAST job's delay
    is startTime − submitTime (the row turns SUBMITTED when the upstream accepted it)."""
    account = unique("t26-shared")
    add_shared_account(session_factory, account, relax_slots=2, queue_size=BACKLOG_JOBS)
    backlog: list[int] = []
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            bodies = list(pool.map(lambda i: submit_relax(api.application, account, i), range(BACKLOG_JOBS)))
        queued_in = time.monotonic() - started
        assert [b["code"] for b in bodies if b["code"] not in (1, 22)] == []
        backlog.extend(int(b["result"]) for b in bodies)
        waiting_then = redis_client.zcard(f"mjq:sched:{account}:relax:waiting")
        fast = [int(api.post("/mj-fast/mj/submit/imagine", json={
                    "prompt": f"fast {i}", "accountFilter": {"instanceId": account}}).get_json()["result"])
                for i in range(FAST_JOBS)]
        with session_factory() as session:
            assert {t.account_id for t in session.scalars(select(Task).where(Task.id.in_(fast)))} == {account}

        def settled() -> list[Task] | None:
            """The FAST rows once each has started (or, wrongly, failed before starting)."""
            with session_factory() as session:
                rows = session.scalars(select(Task).where(Task.id.in_(fast))).all()
            done = [t for t in rows if t.start_time or t.status in protocol.TERMINAL_STATUSES]
            return rows if len(done) == FAST_JOBS else None

        rows = cast(list[Task], wait_for(settled, 60, "every FAST job to start"))
        waiting_after = redis_client.zcard(f"mjq:sched:{account}:relax:waiting")
        delays = sorted((t.start_time - t.submit_time) / 1000 for t in rows if t.start_time)
        failed = [f"{t.id}: {t.fail_reason}" for t in rows if not t.start_time]
        p50, p95 = delays[len(delays) // 2], delays[math.ceil(0.95 * len(delays)) - 1]
        print(f"\nT2.6 FAST start delay p50 {p50:.2f} s, p95 {p95:.2f} s, max {delays[-1]:.2f} s over "
              f"{len(delays)} of {FAST_JOBS} jobs, while {waiting_then}..{waiting_after} of {BACKLOG_JOBS} RELAX "
              f"jobs waited (backlog submitted in {queued_in:.1f} s); failed before starting: {failed or 'none'}")
        assert failed == []
        assert waiting_after >= BACKLOG_JOBS - 100, "the RELAX backlog drained before the FAST jobs ran"
        assert p95 <= 5.0
    finally:
        drain_backlog(session_factory, redis_client, account, backlog)
