"""The reconciler: PostgreSQL is the truth, Redis may forget. Runs on beat every sweep period.

- A NOT_START row whose message was never sent (broker down at submit) is enqueued.
- When Redis lost everything (the epoch marker is gone), every open row that no live
  execution is moving is enqueued again; the claim counter makes duplicates harmless.
- A claimed row whose execution stopped beating (its worker was killed) is enqueued again
  at once; the new execution resumes the recorded upstream job.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.models import Task, now_ms
from workers.dispatch import Dispatcher
from workers.scheduler import heartbeat_key

log = logging.getLogger(__name__)

#: Present while Redis keeps its data; its absence means Redis restarted empty.
EPOCH_KEY = "mjq:epoch"
#: A fresh row is the API's to enqueue for this long after commit, in milliseconds.
SUBMIT_GRACE_MS = 5_000
#: Rows enqueued per sweep at most (the next sweep takes the rest).
BATCH = 1000


def redis_was_wiped(redis: Redis, clock: Callable[[], int]) -> bool:
    """True when the epoch marker was missing (and set it again). Raises RedisError when Redis is down."""
    return bool(redis.set(EPOCH_KEY, str(clock()), nx=True))


def reconcile(session_factory: sessionmaker, redis: Redis, dispatcher: Dispatcher, idle_ms: int,
              clock: Callable[[], int] = now_ms, dead_after_ms: int | None = None) -> dict[str, int]:
    """One sweep. `idle_ms`: an open row untouched this long after a Redis wipe is enqueued again.
    `dead_after_ms`: a claimed row untouched this long whose execution has no heartbeat (its worker
    died) is enqueued again at once, instead of waiting for Redis's visibility timeout.

    Returns counts of what was done, for logs and tests.
    """
    now = clock()
    try:
        wiped = redis_was_wiped(redis, clock)
    except RedisError as exc:
        log.warning("reconcile skipped, Redis unavailable: %s", exc)
        return {"unsent": 0, "after_wipe": 0, "orphaned": 0}
    with session_factory() as session:
        unsent = session.scalars(
            select(Task).where(Task.status == protocol.NOT_START, Task.enqueued_at.is_(None),
                               Task.submit_time < now - SUBMIT_GRACE_MS).order_by(Task.id).limit(BATCH)
        ).all()
        lost: list[Task] = []
        if wiped:
            lost = list(session.scalars(
                select(Task).where(
                    Task.status.in_(protocol.OPEN_STATUSES), Task.enqueued_at.is_not(None),
                    or_(Task.status == protocol.NOT_START, Task.updated_at < now - idle_ms),
                ).order_by(Task.id).limit(BATCH)
            ).all())
        orphans: list[Task] = []
        if dead_after_ms is not None and not wiped:
            claimed = list(session.scalars(
                select(Task).where(Task.status.in_(protocol.OPEN_STATUSES), Task.attempt > 0,
                                   Task.updated_at < now - dead_after_ms).order_by(Task.id).limit(BATCH)
            ).all())
            if claimed:
                pipe = redis.pipeline(transaction=False)
                for task in claimed:
                    pipe.exists(heartbeat_key(task.id))
                orphans = [t for t, beating in zip(claimed, pipe.execute(), strict=True) if not beating]
        sent = {"unsent": 0, "after_wipe": 0, "orphaned": 0}
        for kind, rows in (("unsent", unsent), ("after_wipe", lost), ("orphaned", orphans)):
            for task in rows:
                if dispatcher.execute(task.id, task.action, task.queue):
                    session.execute(update(Task).where(Task.id == task.id).values(enqueued_at=clock()))
                    sent[kind] += 1
            session.commit()
    if any(sent.values()) or wiped:
        log.info("reconcile: redis wiped=%s, enqueued again: %s", wiped, sent)
    return sent
