"""The Discord events of one account, in a Redis Stream, so any worker on any host can follow its job.

The gateway process that holds the account (workers/gateway) appends every event a job
needs: MESSAGE_CREATE/UPDATE/DELETE of the account's channel and of the bots' DMs, the
INTERACTION_* events, and mjq's own ACCOUNT_DISABLED. A follower reads from the stream id
recorded just before its interaction was sent, so a redelivered job replays everything
since its start without submitting again.

The append is fenced: a Lua script writes only while the caller still holds the account's
ownership lease (its token matches), and records the gateway's resume point (session id,
sequence) in the same step, so a gateway that takes the account over resumes exactly where
the stream ends.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

#: mjq's own event: the account was taken out of service; followers fail their jobs with `d.reason`.
ACCOUNT_DISABLED = "ACCOUNT_DISABLED"
#: How long events are kept, milliseconds (longer than the longest job timeout, 120 min).
RETENTION_MS = 3 * 3600 * 1000
#: How long a follower blocks in one XREAD, milliseconds (below the Redis client's socket timeout).
READ_BLOCK_MS = 2000
_PUBLISH = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local id = 'saved'
if ARGV[3] ~= '' then id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', 'e', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5]) end
return id
"""


def stream_key(account_id: str) -> str:
    return f"mjq:discord:{account_id}:events"


def owner_key(account_id: str) -> str:
    """The ownership lease of an account's gateway connection (workers/gateway/ownership.py)."""
    return f"mjq:discord:{account_id}:owner"


def session_key(account_id: str) -> str:
    """Where the holder keeps its resume point: {session_id, seq, resume_url}."""
    return f"mjq:discord:{account_id}:session"


@dataclass(frozen=True)
class Event:
    """One stream entry: its id, the Discord dispatch type and payload."""

    id: str
    type: str
    data: dict[str, Any]


class EventStream:
    """Append and read one account's events. `redis` must allow blocking calls of READ_BLOCK_MS."""

    def __init__(self, redis: Redis, account_id: str, clock_ms: Callable[[], int] | None = None) -> None:
        self.redis = redis
        self.account_id = account_id
        self.key = stream_key(account_id)
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._publish = redis.register_script(_PUBLISH)

    def append(self, event_type: str, data: dict[str, Any], holder: str = "", resume: dict[str, Any] | None = None,
               resume_ttl_ms: int = RETENTION_MS) -> str | None:
        """Append one event; with `holder`, only while the ownership lease still names it.

        `resume` (the gateway's session id and sequence after this event) is stored atomically
        with it. Returns the stream id, or None when the lease is held by someone else.
        """
        payload = json.dumps({"t": event_type, "d": data}, separators=(",", ":"))
        result = self._publish(keys=[self.key, owner_key(self.account_id), session_key(self.account_id)],
                               args=[holder, self.clock_ms() - RETENTION_MS, payload,
                                     json.dumps(resume) if resume else "", resume_ttl_ms])
        if not result:
            return None
        return result.decode() if isinstance(result, bytes) else str(result)

    def save_resume(self, holder: str, resume: dict[str, Any], ttl_ms: int = RETENTION_MS) -> bool:
        """Record the gateway's resume point without an event (READY, RESUMED); fenced like `append`."""
        result = self._publish(keys=[self.key, owner_key(self.account_id), session_key(self.account_id)],
                               args=[holder, 0, "", json.dumps(resume), ttl_ms])
        return bool(result)

    def resume_point(self) -> dict[str, Any] | None:
        """The last holder's resume point (session id, sequence, resume URL), if one was kept."""
        raw = cast("bytes | None", self.redis.get(session_key(self.account_id)))
        return dict(json.loads(raw)) if raw else None

    def forget_resume(self) -> None:
        self.redis.delete(session_key(self.account_id))

    def last_id(self) -> str:
        """The id of the newest event ("0-0" for an empty stream): a follower reads after it."""
        newest = cast(list[Any], self.redis.xrevrange(self.key, count=1))
        if not newest:
            return "0-0"
        raw = newest[0][0]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def read(self, after: str, block_ms: int = READ_BLOCK_MS, count: int = 200) -> list[Event]:
        """Events after stream id `after`, waiting up to `block_ms` for the first one."""
        answer = cast(list[Any], self.redis.xread({self.key: after}, count=count, block=block_ms))
        events = []
        for _key, entries in answer or []:
            for raw_id, fields in entries:
                body = fields.get(b"e") if b"e" in fields else fields.get("e")
                decoded = json.loads(body)
                events.append(Event(raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id),
                                    str(decoded["t"]), dict(decoded.get("d") or {})))
        return events

    def follow(self, after: str, until: Callable[[], bool], block_ms: int = READ_BLOCK_MS) -> Iterator[Event]:
        """Every event after `after`, as they come, until `until()` is true between reads."""
        cursor = after
        while not until():
            for event in self.read(cursor, block_ms):
                cursor = event.id
                yield event
