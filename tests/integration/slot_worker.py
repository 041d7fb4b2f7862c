"""Slot holders that tests/integration/test_slots.py runs as real processes.

`python -m tests.integration.slot_worker <command> --redis URL --account ID --ns PREFIX ...`

- `hammer`: many threads, each repeating admit → acquire → check → one call to a fake
  upstream that counts its own in-flight calls → release; writes a JSON report.
- `hold`: takes the only slot, renews it with a LeaseKeeper and waits to be killed.
- `stale`: takes the only slot, pauses (the test SIGSTOPs it there, past the lease) and then
  does what the executor does before an upstream call: `check`, then the simulator's
  `submit` with the slot's fencing token. It records how that ended.

Every process talks to the test only through Redis keys under `--ns` and its stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from redis import Redis

from app.images import LocalImageStore
from workers.drivers.base import Job, UpstreamError
from workers.drivers.simulator import SimulatorDriver
from workers.scheduler import MAX_BLOCK_SECONDS, Candidate, Lease, LeaseKeeper, LeaseLost, Scheduler

POOL = "fast"
#: How long `hammer` waits for the test's start signal, seconds.
START_TIMEOUT_SECONDS = 60.0
#: Longest one acquisition may wait in `hammer` before the run counts as failed, seconds.
HAMMER_WAIT_SECONDS = 120.0

# The fake upstream's own gauge: count the call in, keep the highest count ever seen, and say
# when (Redis's clock, µs) the call began; `_LEAVE` counts it out and says when it ended.
_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
local t = redis.call('TIME')
return {n, t[1] * 1000000 + t[2]}
"""
_LEAVE = """
redis.call('DECR', KEYS[1])
local t = redis.call('TIME')
return t[1] * 1000000 + t[2]
"""

# Outcomes of `stale`, written to `<ns>:outcome`.
ACCEPTED = "accepted by the upstream"
STOPPED_AT_CHECK = "stopped at check"
REFUSED_BY_FENCE = "refused by the upstream's fence"


def connect(url: str) -> Redis:
    """A client whose socket outlives the scheduler's longest BLPOP (as in workers/runtime.py)."""
    return Redis.from_url(url, socket_timeout=MAX_BLOCK_SECONDS + 5, socket_connect_timeout=3)


def take_slot(sched: Scheduler, account: str, task_id: int, limit: int, queue_size: int) -> Lease:
    """Join the account's FIFO queue and block until granted, as a submit plus an execution do."""
    submit_ms = sched.clock()
    sched.admit([Candidate(account, limit, queue_size)], POOL, task_id, submit_ms)
    return sched.acquire(account, POOL, task_id, limit, submit_ms, wait_seconds=HAMMER_WAIT_SECONDS)


def simulator(redis: Redis) -> SimulatorDriver:
    """The simulated upstream; `submit` checks the fencing token and never touches the image store."""
    return SimulatorDriver(LocalImageStore(Path(tempfile.gettempdir()), "http://unused.test"), 0.0, redis)


def upstream_job(lease: Lease) -> Job:
    """What the executor hands the driver for `lease`'s task: its slot and fencing token included."""
    return Job(task_id=lease.task_id, action="IMAGINE", prompt="a slot test", mode="FAST", bot_type="MID_JOURNEY",
               nonce=str(lease.task_id), account_id=lease.account_id, slot_token=lease.token, slot_index=lease.slot)


def hammer(args: argparse.Namespace) -> int:
    """`--threads` × `--count` acquisitions; each holds the fake upstream for `--hold-ms`."""
    redis = connect(args.redis)
    sched = Scheduler(redis, lease_seconds=args.lease)
    enter, leave = redis.register_script(_ENTER), redis.register_script(_LEAVE)
    inflight, peak = f"{args.ns}:inflight", f"{args.ns}:inflight-max"
    hold_seconds = args.hold_ms / 1000.0
    go = threading.Event()
    lock = threading.Lock()
    calls: list[tuple[float, float, float, float]] = []
    finished: list[float] = []
    errors: list[str] = []
    seen_max = 0

    def run(thread: int) -> None:
        nonlocal seen_max
        base = (args.index * 1000 + thread) * 10_000
        go.wait()
        mine: list[tuple[float, float, float, float]] = []
        try:
            for i in range(args.count):
                lease = take_slot(sched, args.account, base + i, args.limit, args.queue_size)
                granted = time.time()
                sched.check(lease)
                n, began_us = enter(keys=[inflight, peak])
                time.sleep(hold_seconds)
                ended_us = leave(keys=[inflight])
                sched.release(lease)
                mine.append((granted, began_us / 1e6, ended_us / 1e6, time.time()))
                with lock:
                    seen_max = max(seen_max, int(n))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on any
            with lock:
                errors.append(f"thread {thread}: {type(exc).__name__}: {exc}")
        with lock:
            calls.extend(mine)
            finished.append(time.time())

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(args.threads)]
    for t in threads:
        t.start()
    redis.incr(f"{args.ns}:ready")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not redis.exists(f"{args.ns}:go"):
        if time.monotonic() > deadline:
            print("no start signal", flush=True)
            return 2
        time.sleep(0.005)
    go.set()
    for t in threads:
        t.join()
    # Per acquisition: granted (returned from acquire), upstream call began and ended (Redis's
    # clock), released (returned from release); seconds since the epoch, one host, one clock.
    report = {"calls": calls, "finished": finished, "max_seen": seen_max, "errors": errors}
    Path(args.report).write_text(json.dumps(report))
    print(f"done: {len(calls)} acquisitions, {len(errors)} errors", flush=True)
    return 0


def hold(args: argparse.Namespace) -> int:
    """Take the only slot and keep it alive until killed; publishes the token at `<ns>:holder`."""
    redis = connect(args.redis)
    sched = Scheduler(redis, lease_seconds=args.lease)
    lease = take_slot(sched, args.account, args.task, 1, 10)
    LeaseKeeper(sched).hold(lease)
    redis.set(f"{args.ns}:holder", lease.token)
    print(f"holding token {lease.token}", flush=True)
    while True:
        time.sleep(1)


def stale(args: argparse.Namespace) -> int:
    """Take the only slot, pause at `--pause-at` (before or after `check`), then call the upstream."""
    redis = connect(args.redis)
    sched = Scheduler(redis, lease_seconds=args.lease)
    lease = take_slot(sched, args.account, args.task, 1, 10)
    LeaseKeeper(sched).hold(lease)
    if args.pause_at == "after-check":
        sched.check(lease)  # valid here: the pause comes between the check and the call
    redis.set(f"{args.ns}:holder", lease.token)
    print(f"holding token {lease.token}", flush=True)
    time.sleep(args.pause)  # the test stops the process in here for longer than the lease
    try:
        if args.pause_at == "before-check":
            sched.check(lease)
        simulator(redis).submit(upstream_job(lease))
        outcome = ACCEPTED
    except LeaseLost:
        outcome = STOPPED_AT_CHECK
    except UpstreamError:
        outcome = REFUSED_BY_FENCE
    redis.set(f"{args.ns}:outcome", outcome)
    print(f"token {lease.token}: {outcome}", flush=True)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slot_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("hammer", "hold", "stale"):
        p = sub.add_parser(name)
        p.add_argument("--redis", required=True)
        p.add_argument("--account", required=True)
        p.add_argument("--ns", required=True, help="prefix of the Redis keys shared with the test")
        p.add_argument("--lease", type=float, default=30.0, help="lease TTL, seconds")
        if name == "hammer":
            p.add_argument("--index", type=int, required=True, help="this process's number (task ids)")
            p.add_argument("--threads", type=int, default=50)
            p.add_argument("--count", type=int, default=50, help="acquisitions per thread")
            p.add_argument("--limit", type=int, default=3)
            p.add_argument("--queue-size", type=int, default=100_000)
            p.add_argument("--hold-ms", type=float, default=10.0)
            p.add_argument("--report", required=True, help="JSON file to write the measurements to")
        else:
            p.add_argument("--task", type=int, required=True)
        if name == "stale":
            p.add_argument("--pause-at", choices=("before-check", "after-check"), required=True)
            p.add_argument("--pause", type=float, default=2.0, help="seconds to pause, un-stopped")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    return {"hammer": hammer, "hold": hold, "stale": stale}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
