"""The sweeper (on beat, with the reconciler): jobs that stopped moving are failed and free their slots.

- A running job (SUBMITTED or IN_PROGRESS) with no progress for its account's timeout
  (default 5 min, counted from the last event, not from the start) fails with a clear
  reason, and its slot is evicted so the next job starts.
- A job that no worker started within MJQ_MAX_QUEUE_SECONDS fails the same way (a worker
  waiting for a slot gives up by itself after MJQ_MAX_WAIT_SECONDS; this catches jobs that
  never reached one, e.g. while every worker of a pool was down).
- Queue entries whose tasks are finished (a crash between the two writes) are dropped, so
  nothing blocks the FIFO behind them.
Each failure is a guarded transition (seq compare-and-set) with its event and webhook.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.models import Account, Task, now_ms
from app.services.accounts import concurrency_for
from workers.events import ClaimLost, Listener, TaskEvents
from workers.scheduler import PREFIX, Scheduler, pool_of

log = logging.getLogger(__name__)

#: Rows failed per sweep at most (the next sweep takes the rest).
BATCH = 500


def sweep(session_factory: sessionmaker, scheduler: Scheduler | None, listeners: list[Listener],
          max_wait_seconds: float, clock: Callable[[], int] = now_ms) -> dict[str, int]:
    """One pass; returns counts of what it did. `max_wait_seconds`: how long a job may stay unstarted
    (MJQ_MAX_QUEUE_SECONDS; a worker waiting for a slot gives up sooner by itself, MJQ_MAX_WAIT_SECONDS)."""
    now = clock()
    done = {"timed_out": 0, "waited_too_long": 0, "stale_queue_entries": 0}
    with session_factory() as session:
        running = session.execute(
            select(Task.id, Task.updated_at, Task.mode, Task.account_id, Account.timeout_minutes, Account)
            .join(Account, Account.id == Task.account_id, isouter=True)
            .where(Task.status.in_((protocol.SUBMITTED, protocol.IN_PROGRESS))).order_by(Task.updated_at)
            .limit(BATCH)
        ).all()
        waiting = session.execute(
            select(Task.id, Task.mode, Task.account_id, Account)
            .join(Account, Account.id == Task.account_id, isouter=True)
            .where(Task.status == protocol.NOT_START, Task.submit_time < now - int(max_wait_seconds * 1000))
            .limit(BATCH)
        ).all()
    for task_id, updated_at, mode, account_id, timeout_minutes, account in running:
        limit_ms = (timeout_minutes or 5) * 60_000
        if updated_at >= now - limit_ms:
            continue
        reason = f"timed out: no progress from the upstream for {timeout_minutes or 5} min"
        if _fail(session_factory, listeners, task_id, reason, clock):
            done["timed_out"] += 1
            _free(scheduler, account, account_id, mode, task_id, evict=True)
    for task_id, mode, account_id, account in waiting:
        reason = f"not started within {max_wait_seconds:.0f} s of its submit (account {account_id})"
        if _fail(session_factory, listeners, task_id, reason, clock):
            done["waited_too_long"] += 1
            _free(scheduler, account, account_id, mode, task_id, evict=False)
    if scheduler is not None:
        done["stale_queue_entries"] = _drop_finished_queue_entries(session_factory, scheduler)
    if any(done.values()):
        log.info("sweep: %s", done)
    return done


def _fail(session_factory: sessionmaker, listeners: list[Listener], task_id: int, reason: str,
          clock: Callable[[], int]) -> bool:
    try:
        TaskEvents(session_factory, None, task_id, None, listeners, clock).transition(
            status=protocol.FAILURE, progress="", failReason=reason, finishTime=clock())
        return True
    except ClaimLost:
        return False  # it finished meanwhile


def _free(scheduler: Scheduler | None, account: Account | None, account_id: str | None, mode: str, task_id: int,
          evict: bool) -> None:
    if scheduler is None or not account_id:
        return
    limit = concurrency_for(account, mode) if account is not None else 1
    try:
        if evict:
            scheduler.evict(account_id, pool_of(mode), task_id, limit)
        scheduler.forget(account_id, pool_of(mode), task_id, limit)
    except RedisError as exc:
        log.warning("could not free task %s's slot (its lease expires by itself): %s", task_id, exc)


def _drop_finished_queue_entries(session_factory: sessionmaker, scheduler: Scheduler) -> int:
    dropped = 0
    try:
        keys = list(scheduler.redis.scan_iter(match=f"{PREFIX}:*:waiting", count=200))
        for key in keys:
            raw = key.decode() if isinstance(key, bytes) else str(key)
            account_id, pool = raw[len(PREFIX) + 1:].rsplit(":", 2)[:2]
            ids = scheduler.waiting(account_id, pool)
            if not ids:
                continue
            with session_factory() as session:
                open_ids = set(session.scalars(select(Task.id).where(
                    Task.id.in_(ids), Task.status.in_(protocol.OPEN_STATUSES))))
            for task_id in ids:
                if task_id not in open_ids:
                    scheduler.redis.zrem(raw, str(task_id))
                    dropped += 1
    except RedisError as exc:
        log.warning("queue cleanup skipped, Redis unavailable: %s", exc)
    return dropped
