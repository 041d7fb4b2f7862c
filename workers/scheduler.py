"""Account slots across every process on every host: FIFO admission, leases, fencing tokens.

Per account and pool (`fast` for FAST/TURBO, `relax` for RELAX) Redis holds:

- `waiting`: a ZSET of task ids in submit order (score = submit time in ms);
- `holders`: a ZSET of `<task id>:<token>:<slot>` whose score is the lease expiry (ms);
- `fence`: a counter; every grant takes the next value as the holder's fencing token, for
  the lowest free slot number (a paused holder of slot 2 is stale once slot 2 was granted
  again: an upstream compares tokens per slot, since N slots are held at once).

Admission at submit picks the account (BestWaitIdle, RoundRobin, Weight or Random) and
puts the task in its `waiting` set in one Lua script, so the answer (code 1, or 22 with
the exact number of tasks ahead, or 23 when every eligible queue is full) is exact under
any concurrency. A worker then acquires: it is granted only when its task is among the
first `free` waiting ones, so slots go out in submit order. A waiter blocks on its own
wake-up list (BLPOP) instead of polling; releases and expired leases wake the next ones.
A holder renews its lease every third of the TTL; a holder that was paused past the TTL
finds its lease gone (`check`) and must not call the upstream.

Why hand-written: the limiters on PyPI (redis-py's Lock, dramatiq's ConcurrentRateLimiter,
python-redis-rate-limit) give neither FIFO order, exact queue positions nor fencing tokens.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from config.errors import MjqError

log = logging.getLogger(__name__)

PREFIX = "mjq:sched"
EPOCH_KEY = f"{PREFIX}:epoch"
WARMUP_KEY = f"{PREFIX}:warmup"
#: A waiter re-checks at least this often even without a wake-up (lost wake-ups, expiries), seconds.
MAX_BLOCK_SECONDS = 10.0
#: Wake-up lists expire so that a waiter that died leaves nothing behind, seconds.
WAKE_TTL_SECONDS = 120
RULES = ("BestWaitIdle", "RoundRobin", "Weight", "Random")

# KEYS: per candidate [holders, waiting]..., then rr counter. ARGV: now, task, submit_ms, rule, rand (0..1), n,
# then per candidate: limit, queue_size, weight. Returns {index (1-based) or 0, code, ahead}.
_ADMIT = """
local now, task, submit_ms, rule, rand, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4],
  tonumber(ARGV[5]), tonumber(ARGV[6])
local open, best, best_key, total_weight = {}, nil, nil, 0
for i = 1, n do
  local holders, waiting = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, qsize, weight = tonumber(ARGV[6 + 3 * i - 2]), tonumber(ARGV[6 + 3 * i - 1]),
    tonumber(ARGV[6 + 3 * i])
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  local h, w = redis.call('ZCARD', holders), redis.call('ZCARD', waiting)
  local free = math.max(limit - h, 0)
  if math.max(w + 1 - free, 0) <= qsize then
    table.insert(open, {i = i, w = w, h = h, free = free, weight = weight, limit = limit})
    total_weight = total_weight + weight
  end
end
if #open == 0 then return {0, 23, 0} end
local pick
if rule == 'RoundRobin' then
  pick = open[(redis.call('INCR', KEYS[2 * n + 1]) - 1) % #open + 1]
elseif rule == 'Random' then
  pick = open[math.floor(rand * #open) + 1]
elseif rule == 'Weight' then
  local target, acc = rand * total_weight, 0
  for _, c in ipairs(open) do
    acc = acc + c.weight
    if target < acc then pick = c break end
  end
  pick = pick or open[#open]
else
  local ties = {}
  for _, c in ipairs(open) do
    local key = math.max(c.w + c.h - c.limit, -1)
    if best == nil or key < best then best = key ties = {c} elseif key == best then table.insert(ties, c) end
  end
  pick = ties[math.floor(rand * #ties) + 1]
end
redis.call('ZADD', KEYS[2 * pick.i], submit_ms, task)
if pick.w < pick.free then return {pick.i, 1, pick.w} end
return {pick.i, 22, pick.w}
"""

# KEYS: holders, waiting, fence, epoch, warmup. ARGV: now, task, limit, lease_ms, submit_ms.
# Returns {1, token, slot} when granted, {-1, 0} when Redis has no epoch yet (new or wiped), else
# {0, ms until worth checking again}.
_ACQUIRE = """
local now, task, limit, lease, submit_ms = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[4]) == 0 then return {-1, 0} end
local warm = redis.call('PTTL', KEYS[5])
if warm > 0 then return {0, warm} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[2], task) == false then redis.call('ZADD', KEYS[2], submit_ms, task) end
local h = redis.call('ZCARD', KEYS[1])
local free = limit - h
local rank = redis.call('ZRANK', KEYS[2], task)
if free > 0 and rank < free then
  -- The lowest slot number no live holder uses: fencing tokens are compared per slot.
  local used = {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local n = tonumber(string.match(m, ':(%d+)$'))
    if n then used[n] = true end
  end
  local slot = 0
  while used[slot] do slot = slot + 1 end
  redis.call('ZREM', KEYS[2], task)
  -- Tokens stay monotonic even after Redis lost the counter: never below the clock (µs resolution).
  local token = redis.call('INCR', KEYS[3])
  if token < now * 1000 then
    token = now * 1000
    redis.call('SET', KEYS[3], string.format('%d', token))
  end
  redis.call('ZADD', KEYS[1], now + lease, task .. ':' .. string.format('%d', token) .. ':' .. slot)
  return {1, token, slot}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then return {0, math.max(tonumber(first[2]) - now, 1)} end
return {0, 1000}
"""

# KEYS: holders, waiting. ARGV: member ('' for none), task, limit, now, wake_prefix, wake_ttl_s.
# Drops the holder and the waiting entry, then wakes the waiters that now fit.
_RELEASE = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[4]))
local free = tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  for _, t in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    local key = ARGV[5] .. t
    redis.call('LPUSH', key, 1)
    redis.call('EXPIRE', key, tonumber(ARGV[6]))
  end
end
return free
"""

# KEYS: holders, warmup. ARGV: member, now, lease_ms. 1 when the lease was extended, 0 when it is gone.
_RENEW = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local now = tonumber(ARGV[2])
if score and tonumber(score) > now then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
if (not score) and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""


class SchedulerError(MjqError):
    """Root of the scheduler's errors."""


class QueueFull(SchedulerError):
    """Raised when every eligible account's queue is full (code 23)."""


class WaitTimeout(SchedulerError):
    """Raised when a job waited longer than its limit for a free slot."""


class LeaseLost(SchedulerError):
    """Raised when a holder's lease expired (it was paused or cut off); it must not act on the slot."""


def pool_of(mode: str) -> str:
    """`fast` for FAST and TURBO (they share an account's fast slots), `relax` for RELAX."""
    return "relax" if mode == "RELAX" else "fast"


@dataclass(frozen=True)
class Candidate:
    account_id: str
    limit: int
    queue_size: int
    weight: int = 1


@dataclass(frozen=True)
class Admission:
    account_id: str
    code: int          # 1 (a slot is free now) or 22 (it waits)
    ahead: int         # tasks waiting ahead of it on that account


@dataclass
class Lease:
    account_id: str
    pool: str
    task_id: int
    token: int
    limit: int
    slot: int = 0  # which of the account's slots (0..limit-1); tokens only compare within one slot

    @property
    def member(self) -> str:
        return f"{self.task_id}:{self.token}:{self.slot}"


def _keys(account_id: str, pool: str) -> tuple[str, str, str]:
    base = f"{PREFIX}:{account_id}:{pool}"
    return f"{base}:holders", f"{base}:waiting", f"{base}:fence"


def _wake_key(task_id: int | str) -> str:
    return f"{PREFIX}:wake:{task_id}"


class Scheduler:
    """Slots on Redis. `redis` must allow blocking calls longer than MAX_BLOCK_SECONDS (socket timeout)."""

    def __init__(self, redis: Redis, lease_seconds: float = 30.0, rule: str = "BestWaitIdle",
                 clock: Callable[[], int] | None = None, rand: Callable[[], float] | None = None,
                 running_jobs: Callable[[], int] | None = None) -> None:
        """`running_jobs` counts jobs running upstream (from PostgreSQL): when Redis comes up empty while
        some run, their holders could be lost, so no slot is granted for one lease TTL while they renew."""
        self.running_jobs = running_jobs
        if rule not in RULES:
            raise ValueError(f"unknown account rule {rule!r}; one of {', '.join(RULES)}")
        import random

        self.redis: Any = redis  # redis-py's stubs mix in the asyncio client's return types
        self.lease_ms = int(lease_seconds * 1000)
        self.rule = rule
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.rand = rand or random.random
        self._admit = redis.register_script(_ADMIT)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    def admit(self, candidates: Sequence[Candidate], pool: str, task_id: int, submit_ms: int) -> Admission:
        """Choose an account for a new task and queue it there. Raises QueueFull (code 23)."""
        keys: list[str] = []
        args: list[Any] = [self.clock(), str(task_id), submit_ms, self.rule, self.rand(), len(candidates)]
        for c in candidates:
            holders, waiting, _ = _keys(c.account_id, pool)
            keys += [holders, waiting]
            args += [c.limit, c.queue_size, max(c.weight, 0)]
        keys.append(f"{PREFIX}:rr:{pool}")
        index, code, ahead = self._admit(keys=keys, args=args)
        if not index:
            raise QueueFull(f"every eligible account's queue is full ({len(candidates)} accounts)")
        return Admission(candidates[int(index) - 1].account_id, int(code), int(ahead))

    def try_acquire(self, account_id: str, pool: str, task_id: int, limit: int, submit_ms: int
                    ) -> tuple[Lease | None, int]:
        """One attempt: (lease, 0) when granted, else (None, ms worth waiting before the next try)."""
        holders, waiting, fence = _keys(account_id, pool)
        keys = [holders, waiting, fence, EPOCH_KEY, WARMUP_KEY]
        args: list[Any] = [self.clock(), str(task_id), limit, self.lease_ms, submit_ms]
        granted, value, *slot = self._acquire(keys=keys, args=args)
        if granted == -1:
            self.start_epoch()
            granted, value, *slot = self._acquire(keys=keys, args=args)
        if granted == 1:
            return Lease(account_id, pool, task_id, int(value), limit, int(slot[0])), 0
        return None, int(value)

    def acquire(self, account_id: str, pool: str, task_id: int, limit: int, submit_ms: int,
                wait_seconds: float, sleep_until_woken: Callable[[str, float], object] | None = None) -> Lease:
        """Block until the task holds a slot (FIFO by submit time). Raises WaitTimeout after `wait_seconds`."""
        deadline = time.monotonic() + wait_seconds
        block = sleep_until_woken or (lambda key, seconds: self.redis.blpop([key], timeout=seconds))
        while True:
            lease, retry_ms = self.try_acquire(account_id, pool, task_id, limit, submit_ms)
            if lease is not None:
                return lease
            left = deadline - time.monotonic()
            if left <= 0:
                self.forget(account_id, pool, task_id, limit)
                raise WaitTimeout(f"waited {wait_seconds:.0f} s for a free slot on account {account_id}")
            # Blocks on this task's own wake-up list: no polling while nothing changes.
            block(_wake_key(task_id), max(0.05, min(left, retry_ms / 1000.0 + 0.05, MAX_BLOCK_SECONDS)))

    def start_epoch(self) -> None:
        """Mark Redis as known. If jobs are running (Redis restarted empty under them), hold every grant
        back for one lease TTL so their holders can register again by renewing: the limit never breaks."""
        running = self.running_jobs() if self.running_jobs is not None else 0
        if self.redis.set(EPOCH_KEY, self.clock(), nx=True) and running:
            self.redis.set(WARMUP_KEY, 1, px=self.lease_ms)
            log.warning("Redis came up empty while %s jobs run: no slot is granted for %s ms", running,
                        self.lease_ms)

    def check(self, lease: Lease) -> None:
        """Raises LeaseLost unless `lease` is still held; call right before acting upstream."""
        holders, _, _ = _keys(lease.account_id, lease.pool)
        score = self.redis.zscore(holders, lease.member)
        if score is None or score <= self.clock():
            raise LeaseLost(f"task {lease.task_id} lost its slot on {lease.account_id} (token {lease.token})")

    def renew(self, lease: Lease, client: Any = None) -> bool:
        """Extend the lease by the TTL; False when it was already gone. With `client` (a pipeline) the
        call is queued and its result comes with the pipeline's."""
        holders, _, _ = _keys(lease.account_id, lease.pool)
        result = self._renew(keys=[holders, WARMUP_KEY], args=[lease.member, self.clock(), self.lease_ms],
                             client=client)
        return bool(result)

    def release(self, lease: Lease) -> None:
        """Give the slot back and wake the next waiters."""
        self._free(lease.account_id, lease.pool, lease.member, lease.task_id, lease.limit)

    def forget(self, account_id: str, pool: str, task_id: int, limit: int) -> None:
        """Drop a task that will not run (cancelled, failed, timed out) from its queue."""
        self._free(account_id, pool, "", task_id, limit)

    def evict(self, account_id: str, pool: str, task_id: int, limit: int) -> None:
        """Free every slot a task holds (the sweeper's hand on a job that timed out or was cancelled)."""
        holders, _, _ = _keys(account_id, pool)
        for member in self.redis.zrange(holders, 0, -1):
            text = member.decode() if isinstance(member, bytes) else str(member)
            if text.split(":", 1)[0] == str(task_id):
                self._free(account_id, pool, text, task_id, limit)

    def _free(self, account_id: str, pool: str, member: str, task_id: int, limit: int) -> None:
        holders, waiting, _ = _keys(account_id, pool)
        self._release(keys=[holders, waiting],
                      args=[member, str(task_id), limit, self.clock(), f"{PREFIX}:wake:", WAKE_TTL_SECONDS])

    def waiting(self, account_id: str, pool: str) -> list[int]:
        """Task ids queued on an account, first first."""
        _, waiting, _ = _keys(account_id, pool)
        return [int(m) for m in self.redis.zrange(waiting, 0, -1)]

    def holders(self, account_id: str, pool: str) -> int:
        holders, _, _ = _keys(account_id, pool)
        return int(self.redis.zcount(holders, self.clock() + 1, "+inf"))


#: Present while an execution of a task is alive (value: its attempt); renewed with the leases.
HEARTBEAT_KEY = "mjq:exec:{task_id}"


def heartbeat_key(task_id: int) -> str:
    return HEARTBEAT_KEY.format(task_id=task_id)


def live_attempt(redis: Any, task_id: int) -> int | None:
    """The attempt whose execution of `task_id` is alive right now, or None."""
    value = redis.get(heartbeat_key(task_id))
    return int(value) if value is not None else None


class LeaseKeeper:
    """One thread per process renews, every third of the TTL, every slot lease it holds and the
    heartbeat of every execution it runs (waiting for a slot or not).

    The heartbeat is how the rest of the cluster tells a live execution from a dead one: a
    redelivered message for a task whose execution is alive is a duplicate and is dropped; a
    task whose execution stopped beating is taken over (see the executor and the reconciler).
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._leases: dict[str, Lease] = {}
        self._beats: dict[int, int] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="mjq-lease-keeper", daemon=True)
            self._thread.start()

    def alive(self, task_id: int, attempt: int) -> None:
        """Start beating for this execution (written at once, then renewed)."""
        with self._lock:
            self._beats[task_id] = attempt
            self._ensure_thread()
        self.scheduler.redis.set(heartbeat_key(task_id), attempt, px=self.scheduler.lease_ms)

    def done(self, task_id: int) -> None:
        """Stop beating: the execution ended (whatever the outcome)."""
        with self._lock:
            attempt = self._beats.pop(task_id, None)
        if attempt is not None:
            try:
                # Delete only our own beat: a newer execution may already have taken over.
                if live_attempt(self.scheduler.redis, task_id) == attempt:
                    self.scheduler.redis.delete(heartbeat_key(task_id))
            except Exception as exc:  # noqa: BLE001 - it expires by itself
                log.warning("could not clear the heartbeat of task %s: %s", task_id, exc)

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._leases[lease.member] = lease
            self._ensure_thread()

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(lease.member, None)
            self._lost.discard(lease.member)

    def lost(self, lease: Lease) -> bool:
        with self._lock:
            return lease.member in self._lost

    def renew_all(self) -> None:
        """One round for everything this process holds, in one pipeline."""
        with self._lock:
            leases = list(self._leases.values())
            beats = dict(self._beats)
        if not leases and not beats:
            return
        try:
            pipe = self.scheduler.redis.pipeline(transaction=False)
            for task_id, attempt in beats.items():
                pipe.set(heartbeat_key(task_id), attempt, px=self.scheduler.lease_ms)
            for lease in leases:
                self.scheduler.renew(lease, client=pipe)
            results = pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis hiccups: the next round tries again
            log.warning("lease renewal failed: %s", exc)
            return
        for lease, renewed in zip(leases, results[len(beats):], strict=True):
            if not renewed:
                with self._lock:
                    self._lost.add(lease.member)
                log.warning("lease of task %s on %s was lost", lease.task_id, lease.account_id)

    def _run(self) -> None:
        while True:
            time.sleep(self.scheduler.lease_ms / 3000.0)
            self.renew_all()
