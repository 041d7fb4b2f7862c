"""Live progress: `/task/{id}/stream` and `/task/stream` as Server-Sent Events.

Every transition publishes `{"seq", "task"}` on Redis (workers/events.py); a stream
subscribes to the channel BEFORE it reads the row, so a change committed in between is
both in the row and queued on the subscription, and the seq filter drops the copy.

A stream holds one gunicorn gthread thread, so its lifetime is bounded
(MJQ_STREAM_MAX_SECONDS): at the end it closes and EventSource reconnects with
Last-Event-ID. The database connection is given back before streaming starts.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, request
from redis import Redis
from redis.client import PubSub
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app import protocol, schemas
from app.api import services
from app.api.auth import require_admin
from app.api.tasks import scoped, visible
from app.db import db, make_session_factory
from app.errors import BadRequest, TaskNotFound
from app.models import Task
from workers.events import ALL_TASKS_CHANNEL, TASK_CHANNEL

log = logging.getLogger(__name__)

bp = Blueprint("stream", __name__, url_prefix="/task")

#: Most task ids one multi-task stream may follow.
MAX_STREAM_IDS = 100
#: Seconds between reads of the rows when Redis cannot be subscribed to.
POLL_SECONDS = 1.0
#: Longest wait for one Redis message, seconds: bounds how late the lifetime and heartbeats are noticed.
WAIT_SECONDS = 1.0
#: Milliseconds EventSource waits before reconnecting after the server closed a stream.
RETRY_MS = 1000
#: Open tasks an admin's all-tasks stream starts with.
SNAPSHOT_LIMIT = 100

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def sse(task: dict[str, Any], event_id: str) -> bytes:
    """One `event: task` frame; the JSON is one line, so one `data:` line carries it."""
    return f"id: {event_id}\nevent: task\ndata: {protocol.dumps(task)}\n\n".encode()


def _subscribe(redis: Redis, channels: Iterable[str]) -> PubSub | None:
    """A subscription to `channels`, or None when Redis is unavailable (the stream then polls the rows)."""
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(*channels)
        return pubsub
    except RedisError as exc:
        log.warning("event stream: Redis unavailable (%s); polling the database every %ss", exc, POLL_SECONDS)
        pubsub.close()
        return None


def _last_event_seq() -> int:
    """The seq the client already has (Last-Event-ID); -1 when it has nothing (a new task's seq is 0)."""
    raw = request.headers.get("Last-Event-ID", request.args.get("lastEventId", ""))
    seq = schemas.parse_digits(raw.strip())
    return -1 if seq is None else seq


class _Follower:
    """The loop both stream forms share: Redis messages, or row polls when Redis is gone.

    `fresh()` reads the rows (used when polling and, as a safety net, at each heartbeat for an
    event whose publish failed after its commit); `accept(task, seq)` returns the frames to send
    and whether the stream is finished.
    """

    def __init__(self, pubsub: PubSub | None, max_seconds: float, heartbeat_seconds: float,
                 fresh: Callable[[], list[tuple[dict[str, Any], int]]],
                 accept: Callable[[dict[str, Any], int], tuple[list[bytes], bool]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pubsub = pubsub
        self.max_seconds = max_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.fresh = fresh
        self.accept = accept
        self.clock = clock

    def run(self, first: list[bytes]) -> Iterator[bytes]:
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            yield from first
            start = self.clock()
            next_beat = start + self.heartbeat_seconds
            next_poll = start + POLL_SECONDS
            while self.clock() - start < self.max_seconds:
                arrived = self._receive(min(WAIT_SECONDS, max(0.0, next_beat - self.clock())))
                now = self.clock()
                if self.pubsub is None and now >= next_poll:
                    arrived = self.fresh()
                    next_poll = now + POLL_SECONDS
                elif self.pubsub is None:
                    time.sleep(min(POLL_SECONDS, max(0.0, next_poll - now)))
                if now >= next_beat:
                    arrived = arrived + self.fresh()
                    next_beat = now + self.heartbeat_seconds
                    yield b": keep-alive\n\n"
                for task, seq in arrived:
                    frames, done = self.accept(task, seq)
                    yield from frames
                    if done:
                        return
        finally:
            if self.pubsub is not None:
                self.pubsub.close()

    def _receive(self, timeout: float) -> list[tuple[dict[str, Any], int]]:
        if self.pubsub is None:
            return []
        try:
            message = self.pubsub.get_message(timeout=timeout)
        except RedisError as exc:
            # Redis went away mid-stream: carry on by polling the rows every second.
            log.warning("event stream: Redis lost (%s); polling the database", exc)
            self.pubsub.close()
            self.pubsub = None
            return []
        if not message or message.get("type") != "message":
            return []
        event = json.loads(message["data"])
        return [(event["task"], int(event["seq"]))]


def _limits() -> tuple[float, float]:
    settings = services().settings
    return settings.stream_max_seconds, settings.stream_heartbeat_seconds


def _stream(body: Iterator[bytes]) -> Response:
    return Response(body, mimetype="text/event-stream", headers=HEADERS, direct_passthrough=True)


def _rows(factory: sessionmaker, ids: Iterable[int]) -> list[tuple[dict[str, Any], int]]:
    with factory() as session:
        return [(t.to_json(), t.seq) for t in session.scalars(select(Task).where(Task.id.in_(list(ids))))]


@bp.get("/<task_id>/stream")
def stream_one(task_id: str) -> Response:
    """One task: its current JSON, then the JSON on every change; closes at SUCCESS/FAILURE/CANCEL.

    The event id is the task's seq; a reconnect with Last-Event-ID skips what the client has.
    """
    parsed = schemas.parse_task_id(task_id)
    if parsed is None:
        raise TaskNotFound(f"task {task_id} not found")
    svc = services()
    pubsub = _subscribe(svc.redis, [TASK_CHANNEL.format(id=parsed)])
    task = db.session.get(Task, parsed)
    if task is None or not visible(task):
        if pubsub is not None:
            pubsub.close()
        raise TaskNotFound(f"task {task_id} not found")
    sent = _last_event_seq()
    current, current_seq = task.to_json(), task.seq
    factory = make_session_factory(db.engine)
    db.session.remove()  # a stream must not hold a pooled connection for minutes

    def accept(data: dict[str, Any], seq: int) -> tuple[list[bytes], bool]:
        nonlocal sent
        if seq <= sent:
            return [], False
        sent = seq
        return [sse(data, str(seq))], data["status"] in protocol.TERMINAL_STATUSES

    first, _done = accept(current, current_seq)
    if current["status"] in protocol.TERMINAL_STATUSES:
        if pubsub is not None:
            pubsub.close()
        if not first:
            # The client has the final event already: 204 is what tells EventSource to stop reconnecting.
            return Response(status=204, headers=HEADERS)
        return _stream(iter([f"retry: {RETRY_MS}\n\n".encode(), *first]))
    max_seconds, heartbeat = _limits()
    follower = _Follower(pubsub, max_seconds, heartbeat, lambda: _rows(factory, [parsed]), accept)
    return _stream(follower.run(first))


def _parse_ids(raw: str) -> list[int]:
    parts = [p for p in raw.split(",") if p.strip()]
    if len(parts) > MAX_STREAM_IDS:
        raise BadRequest(f"ids holds {len(parts)} ids; at most {MAX_STREAM_IDS} per stream")
    ids = [schemas.parse_task_id(p) for p in parts]
    return list(dict.fromkeys(i for i in ids if i is not None))


@bp.get("/stream")
def stream_many() -> Response:
    """Several tasks for a dashboard: `?ids=1,2,3` (visible ones; at most 100), or every task for admins.

    Starts with the current JSON of each task (of each open task, newest 100, for the all-tasks
    form), then the JSON on every change. It does not end at terminal states; it closes after
    MJQ_STREAM_MAX_SECONDS and the client reconnects (the snapshot then brings it up to date).
    Event ids are `<task id>:<seq>`.
    """
    svc = services()
    ids = _parse_ids(request.args.get("ids", ""))
    if not ids:
        require_admin()
    channels = [TASK_CHANNEL.format(id=i) for i in ids] or [ALL_TASKS_CHANNEL]
    pubsub = _subscribe(svc.redis, channels)
    if ids:
        rows = [t for t in db.session.scalars(scoped(select(Task).where(Task.id.in_(ids))))]
    else:
        rows = list(db.session.scalars(select(Task).where(Task.status.in_(protocol.OPEN_STATUSES))
                                       .order_by(Task.id.desc()).limit(SNAPSHOT_LIMIT)))
    allowed = {t.id for t in rows}
    if ids and pubsub is not None and set(ids) - allowed:
        pubsub.unsubscribe(*[TASK_CHANNEL.format(id=i) for i in set(ids) - allowed])
    seen: dict[str, int] = {}
    since = max((t.updated_at or 0 for t in rows), default=0)
    snapshot = [(t.to_json(), t.seq) for t in sorted(rows, key=lambda t: t.id)]
    factory = make_session_factory(db.engine)
    db.session.remove()

    def accept(data: dict[str, Any], seq: int) -> tuple[list[bytes], bool]:
        if ids and int(data["id"]) not in allowed or seq <= seen.get(data["id"], -1):
            return [], False
        seen[data["id"]] = seq
        return [sse(data, f"{data['id']}:{seq}")], False

    def fresh() -> list[tuple[dict[str, Any], int]]:
        nonlocal since
        if ids:
            return _rows(factory, allowed)
        # All tasks without Redis: what changed since the newest change already seen.
        with factory() as session:
            changed = list(session.scalars(select(Task).where(Task.updated_at > since)
                                           .order_by(Task.updated_at).limit(SNAPSHOT_LIMIT)))
        since = max([since, *(t.updated_at or 0 for t in changed)])
        return [(t.to_json(), t.seq) for t in changed]

    first = [frame for data, seq in snapshot for frame in accept(data, seq)[0]]
    max_seconds, heartbeat = _limits()
    return _stream(_Follower(pubsub, max_seconds, heartbeat, fresh, accept).run(first))
