"""Task transitions: every change of a task row is one compare-and-set UPDATE and one publish.

The UPDATE matches the row's id, the claim (`attempt`) the writer holds and the event
sequence it read; a writer whose claim was taken over (a redelivered copy of the job, a
cancel) matches nothing and gets ClaimLost instead of overwriting newer state. An execution
reads the row once, before its claim: its first transition starts from that row as the claim
left it, each later one from the state its previous one wrote, and it reads again only when
its UPDATE misses.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, Protocol, runtime_checkable

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Update, bindparam, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from app import protocol
from app.models import TASKS, Task, now_ms
from config.errors import MjqError

log = logging.getLogger(__name__)

#: Redis pub/sub channel of one task's events (`{id}` is the task id).
TASK_CHANNEL = "mjq:task:{id}"
#: Redis pub/sub channel of every task's events, for dashboards.
ALL_TASKS_CHANNEL = "mjq:tasks"
#: How many times a transition re-reads the row when only its sequence moved (a concurrent writer).
CAS_RETRIES = 5

_COLUMNS = {
    "status": "status", "progress": "progress", "imageUrl": "image_url", "failReason": "fail_reason",
    "startTime": "start_time", "finishTime": "finish_time", "buttons": "buttons", "prompt": "prompt",
    "promptEn": "prompt_en", "description": "description", "upstream_id": "upstream_id",
    "upstream_state": "upstream_state",
}


@lru_cache(maxsize=512)
def _guarded_update(columns: tuple[str, ...], fenced: bool) -> Update:
    """`UPDATE tasks SET <columns> WHERE id AND seq [AND attempt] RETURNING <columns>`, built once per shape.

    The values come as parameters (`v_<column>`, `k_id`, `k_seq`, `k_attempt`): building the statement and its
    cache key on every transition cost about as much CPU as running it (bench P3). RETURNING gives the written
    columns in the database's own form (JSONB orders an object's keys), so events and webhooks carry what a
    fetch of the row answers.
    """
    table = TASKS.c
    guards = [table.id == bindparam("k_id"), table.seq == bindparam("k_seq")]
    if fenced:
        guards.append(table.attempt == bindparam("k_attempt"))
    return (update(TASKS).where(*guards)
            .values({column: bindparam(f"v_{column}", type_=table[column].type) for column in columns})
            .returning(*(table[column] for column in columns)))


class ClaimLost(MjqError):
    """Raised when a worker writes to a task it no longer holds (another claim or a terminal state)."""


@runtime_checkable
class OutboxWriter(Protocol):
    """A listener that writes inside the transition's own transaction (the webhook outbox).

    `write_in_transaction(session, task, data, seq)` runs after the guarded UPDATE matched and
    before the commit, so what it writes commits with the transition or not at all; it may
    return a callable that runs once the commit succeeded (e.g. a fast-path enqueue).
    """

    def write_in_transaction(self, session: Session, task: Task, data: dict[str, Any], seq: int
                             ) -> Callable[[], object] | None: ...


Listener = Callable[[dict[str, Any], int], None] | OutboxWriter


class TaskEvents:
    """The write side of one claimed execution of a task.

    `attempt` is the claim this execution holds (None for the API and the sweeper, which act on a
    task whatever execution holds it: cancel, timeout); `listeners` are called with (task JSON, seq)
    after each committed transition; those that are OutboxWriters write inside it instead.
    """

    def __init__(self, session_factory: sessionmaker, redis: Redis | None, task_id: int, attempt: int | None,
                 listeners: list[Listener] | None = None, clock: Callable[[], int] = now_ms,
                 row: Task | None = None) -> None:
        self.session_factory = session_factory
        self.redis = redis
        self.task_id = task_id
        self.attempt = attempt
        self.clock = clock
        # The row after this object's last committed transition (bench P3: one SELECT fewer per transition);
        # `row` is where the first one starts: the row as the caller last saw it committed (the claim's).
        self._last: Task | None = row
        # Sorted once: an isinstance check against a runtime Protocol costs 10-20 µs, and a transition made two per
        # listener (bench P3).
        self._outboxes: list[OutboxWriter] = []
        self._after: list[Callable[[dict[str, Any], int], None]] = []
        for listener in listeners or []:
            if isinstance(listener, OutboxWriter):
                self._outboxes.append(listener)
            else:
                self._after.append(listener)

    def transition(self, properties: dict[str, Any] | None = None, quiet: bool = False, **changes: Any
                   ) -> dict[str, Any]:
        """Apply `changes` (task JSON keys, plus upstream_id/upstream_state) and merge `properties`.

        `quiet` is for bookkeeping that clients do not see (the upstream record): the row is
        guarded the same way but no event is announced.

        Returns the task JSON after the change. Raises ClaimLost when this execution no longer
        holds the task or the task already reached a terminal state.
        """
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown task fields {sorted(unknown)}")
        for _ in range(CAS_RETRIES):
            with self.session_factory() as session:
                # The row as this execution last wrote it, else as read now. A stale copy costs nothing: the
                # UPDATE below matches its sequence, so any other writer since makes it miss and re-read.
                task, self._last = self._last or session.get(Task, self.task_id), None
                held = self.attempt is None or task is not None and task.attempt == self.attempt
                if task is None or not held or task.status in protocol.TERMINAL_STATUSES:
                    raise ClaimLost(f"task {self.task_id} is no longer held by attempt {self.attempt}")
                values: dict[str, Any] = {_COLUMNS[k]: v for k, v in changes.items()}
                if properties:
                    values["properties"] = {**(task.properties or {}), **properties}
                seen_seq = task.seq
                values["seq"] = seen_seq + 1
                values["updated_at"] = self.clock()
                params = {f"v_{column}": value for column, value in values.items()}
                params.update(k_id=self.task_id, k_seq=seen_seq)
                fenced = self.attempt is not None
                if fenced:
                    params["k_attempt"] = self.attempt
                # On the session's connection, not through `session.execute`: the ORM's execute layer cost ~8 % of
                # a transition's CPU for a statement that touches no mapped object (bench P3).
                written = session.connection().execute(_guarded_update(tuple(values), fenced), params).first()
                if written is None:
                    session.rollback()
                    continue  # someone wrote in between: re-read, and either retry or find the claim lost
                # The UPDATE matched the sequence read above, so the row now holds what was read plus the
                # written columns: the object takes them as its committed state, no SELECT again (bench P3).
                for column, value in zip(values, written, strict=True):
                    set_committed_value(task, column, value)
                data = task.to_json()
                after_commit = [] if quiet else self._write_outboxes(session, task, data)
                session.commit()
                self._last = task
                if not quiet:
                    self._announce(data, task.seq, after_commit)
                return data
        raise ClaimLost(f"task {self.task_id}: {CAS_RETRIES} concurrent writers in a row")

    def _write_outboxes(self, session: Session, task: Task, data: dict[str, Any]) -> list[Callable[[], object]]:
        after_commit = []
        for listener in self._outboxes:
            then = listener.write_in_transaction(session, task, data, task.seq)
            if then is not None:
                after_commit.append(then)
        return after_commit

    def _announce(self, data: dict[str, Any], seq: int, after_commit: list[Callable[[], object]]) -> None:
        publish(self.redis, data, seq)
        calls: list[Callable[[], object]] = [*after_commit, *(partial(listener, data, seq) for listener in self._after)]
        for call in calls:
            try:
                call()
            except Exception:  # noqa: BLE001 - a listener must never undo a committed transition
                log.exception("event listener failed for task %s seq %s", self.task_id, seq)


def publish(redis: Redis | None, data: dict[str, Any], seq: int) -> None:
    """Publish one task event for live watchers. Redis being down loses only the live view."""
    if redis is None:
        return
    message = protocol.dumps({"seq": seq, "task": data})
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.publish(TASK_CHANNEL.format(id=data["id"]), message)
        pipe.publish(ALL_TASKS_CHANNEL, message)
        pipe.execute()
    except RedisError as exc:
        log.warning("publish of task %s seq %s failed: %s", data["id"], seq, exc)


#: `UPDATE tasks SET attempt, claimed_by, updated_at WHERE id AND attempt AND status is open`, built once: as an
#: ORM statement with literal values, built and keyed per job, it cost 0.8 ms of CPU against 0.35 (bench P3).
_CLAIMED = ("attempt", "claimed_by", "updated_at")
_CLAIM = (update(TASKS)
          .where(TASKS.c.id == bindparam("k_id"), TASKS.c.attempt == bindparam("k_attempt"),
                 TASKS.c.status.in_(sorted(protocol.OPEN_STATUSES)))
          .values({column: bindparam(f"v_{column}") for column in _CLAIMED}))


def claim(session: Session, task_id: int, seen_attempt: int, worker: str, clock: Callable[[], int] = now_ms,
          row: Task | None = None) -> int | None:
    """Take task `task_id` for one execution: bump its attempt if it is still `seen_attempt` and open.

    Returns the new attempt number (the fencing token of this execution) or None when another
    execution claimed it first or it is no longer open. A claimed `row` (the task as read before
    the claim) is left holding what the claim wrote, so the execution's first transition can start
    from it without reading the row again.
    """
    values = dict(zip(_CLAIMED, (seen_attempt + 1, worker, clock()), strict=True))
    params = {f"v_{column}": value for column, value in values.items()}
    result = session.connection().execute(_CLAIM, {**params, "k_id": task_id, "k_attempt": seen_attempt})
    session.commit()
    if result.rowcount != 1:
        return None
    if row is not None:
        for column, value in values.items():
            set_committed_value(row, column, value)
    return seen_attempt + 1
