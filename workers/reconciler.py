"""The reconciler: PostgreSQL is the truth, Redis may forget. Runs on beat every sweep period.

- A NOT_START row whose message was never sent (broker down at submit) is enqueued.
- When Redis lost everything (the epoch marker is gone), every open row that no live
  execution is moving is enqueued again; the claim counter makes duplicates harmless.
- A claimed row whose execution stopped beating (its worker was killed) is enqueued again
  at once; the new execution resumes the recorded upstream job.
- A row that no worker ever claimed although its message was sent long ago, and whose
  message Redis no longer holds (neither waiting in its queue's list nor reserved by a worker
  in kombu's `unacked` hash), is enqueued again: kombu drops a message when a worker dies
  between popping it and recording it as reserved.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

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
#: kombu's Redis transport: the hash of messages reserved by workers and not yet acknowledged.
UNACKED_KEY = "unacked"
#: A queue list longer than this many messages is not read for lost messages this sweep (a
#: backlog that large costs more to read than the rare lost message is worth; it is checked
#: again once the backlog drains).
MAX_SCANNED_MESSAGES = 20_000
#: Task ids named per kind in a sweep's log line (so an operator can follow a resent job).
LOGGED_IDS = 20


def _message_task_id(raw: bytes, reserved: bool) -> int | None:
    """The mjq task id of one kombu message as stored in Redis (a reserved one is [message, exchange, key])."""
    try:
        message = json.loads(raw)
        if reserved:
            message = message[0]
        return int(message["headers"]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None  # another task's message (a Celery uuid id) or a foreign value


def messages_held(redis: Redis, queue_names: Iterable[str], reserved: bool = True) -> set[int] | None:
    """Task ids whose messages Redis holds: waiting in one of `queue_names` or (`reserved`) reserved by a worker.

    Read in one MULTI, so a message kombu moves from `unacked` back to its list in the meantime
    is seen once. None when a list is longer than MAX_SCANNED_MESSAGES (not read).
    Raises RedisError when Redis is down.
    """
    names = sorted(set(queue_names))
    pipe = redis.pipeline(transaction=True)
    for name in names:
        pipe.llen(name)
    if any(length > MAX_SCANNED_MESSAGES for length in pipe.execute()):
        return None
    pipe = redis.pipeline(transaction=True)
    for name in names:
        pipe.lrange(name, 0, MAX_SCANNED_MESSAGES)
    if reserved:
        pipe.hvals(UNACKED_KEY)
    answers = pipe.execute()
    lists, taken = (answers[:-1], answers[-1]) if reserved else (answers, [])
    if any(len(items) > MAX_SCANNED_MESSAGES for items in lists):
        return None
    held = {_message_task_id(raw, reserved=False) for items in lists for raw in items}
    held.update(_message_task_id(raw, reserved=True) for raw in taken)
    held.discard(None)
    return held  # type: ignore[return-value]


#: What a sweep enqueues again, in the order of `reconcile`'s answer.
KINDS = ("unsent", "after_wipe", "orphaned", "dropped")


def _dropped_messages(session: Session, redis: Redis, sent_before_ms: int) -> list[Task]:
    """NOT_START rows never claimed, sent before `sent_before_ms`, whose message Redis no longer holds."""
    candidates = list(session.scalars(
        select(Task).where(Task.status == protocol.NOT_START, Task.attempt == 0, Task.enqueued_at.is_not(None),
                           Task.enqueued_at < sent_before_ms).order_by(Task.id).limit(BATCH)
    ).all())
    if not candidates:
        return []
    held = messages_held(redis, {t.queue for t in candidates})
    if held is None:
        log.info("reconcile: a queue holds over %d messages; lost messages are looked for later",
                 MAX_SCANNED_MESSAGES)
        return []
    return [t for t in candidates if t.id not in held]


def redis_was_wiped(redis: Redis, clock: Callable[[], int]) -> bool:
    """True when the epoch marker was missing (and set it again). Raises RedisError when Redis is down."""
    return bool(redis.set(EPOCH_KEY, str(clock()), nx=True))


def reconcile(session_factory: sessionmaker, redis: Redis, dispatcher: Dispatcher, idle_ms: int,
              clock: Callable[[], int] = now_ms, dead_after_ms: int | None = None) -> dict[str, int]:
    """One sweep. `idle_ms`: an open row untouched this long after a Redis wipe is enqueued again.
    `dead_after_ms`: a claimed row untouched this long whose execution has no heartbeat (its worker
    died) is enqueued again at once, instead of waiting for Redis's visibility timeout.
    A row never claimed `idle_ms` after its message was sent, whose message Redis no longer
    holds, is enqueued again (`dropped`).

    Returns counts of what was done, for logs and tests.
    """
    now = clock()
    try:
        wiped = redis_was_wiped(redis, clock)
    except RedisError as exc:
        log.warning("reconcile skipped, Redis unavailable: %s", exc)
        return dict.fromkeys(KINDS, 0)
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
            if orphans:
                # One sent before and still waiting its turn in the queue is not sent again: copies piling
                # up behind a backlog arrive together and only make duplicates to drop.
                waiting = messages_held(redis, {t.queue for t in orphans}, reserved=False)
                orphans = [t for t in orphans if waiting is None or t.id not in waiting]
        dropped: list[Task] = []
        if not wiped:
            dropped = _dropped_messages(session, redis, now - idle_ms)
        sent = dict.fromkeys(KINDS, 0)
        named: dict[str, list[int]] = {}
        for kind, rows in zip(KINDS, (unsent, lost, orphans, dropped), strict=True):
            ids = dispatcher.execute_many((t.id, t.action, t.queue) for t in rows) if rows else []
            if ids:
                session.execute(update(Task).where(Task.id.in_(ids)).values(enqueued_at=clock()))
                session.commit()
                named[kind] = list(ids[:LOGGED_IDS])
            sent[kind] = len(ids)
    if any(sent.values()) or wiped:
        log.info("reconcile: redis wiped=%s, enqueued again: %s; ids: %s", wiped, sent, named)
    return sent
