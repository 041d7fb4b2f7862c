"""What a key may submit: its plan's modes and caps, its balance, its request rate.

Checked inside the submit's transaction with the key's row locked (SELECT … FOR UPDATE on
PostgreSQL), so two concurrent submits of one key cannot both slip under a cap.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import protocol
from app.errors import QueueRejected, TooManyRequests
from app.models import Task
from app.models_tenancy import ApiKey
from app.services.plans import Plan, price

UNFINISHED = (*protocol.OPEN_STATUSES, protocol.MODAL)


def start_of_utc_day_ms(now_ms: int) -> int:
    day = datetime.fromtimestamp(now_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(day.timestamp() * 1000)


def check_plan(session: Session, key_id: str, plans: dict[str, Plan], prices: dict[str, tuple[int, int]],
               action: str, mode: str, now_ms: int) -> None:
    """Raise QueueRejected (23) naming the cap reached: the plan's modes, unfinished tasks, tasks per day, balance."""
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id).with_for_update())
    if key is None:
        return
    plan = plans.get(key.plan)
    if plan is None:
        raise QueueRejected(f"key {key.id} has plan {key.plan!r}, which is not configured")
    if mode not in plan.modes:
        raise QueueRejected(f"plan {plan.name} allows only {', '.join(plan.modes)} modes; {mode} is not among them")
    unfinished = int(session.scalar(select(func.count()).select_from(Task).where(
        Task.owner == key_id, Task.status.in_(UNFINISHED))) or 0)
    if unfinished >= plan.max_unfinished:
        raise QueueRejected(f"plan {plan.name} allows {plan.max_unfinished} unfinished tasks at once and this key "
                            f"has {unfinished}; wait for some to finish")
    today = int(session.scalar(select(func.count()).select_from(Task).where(
        Task.owner == key_id, Task.submit_time >= start_of_utc_day_ms(now_ms))) or 0)
    if today >= plan.daily_tasks:
        raise QueueRejected(f"plan {plan.name} allows {plan.daily_tasks} tasks per day (UTC); the cap is reached")
    cost = price(prices, action, mode)
    if key.balance is not None and key.balance < cost:
        raise QueueRejected(f"balance {key.balance} tokens is below the price of {action} in {mode} mode "
                            f"({cost} tokens)")


#: What each per-key rate counts, as its 429 answer words the limit.
SUBMITS, REQUESTS = "submit", "request"
_RATE_TEXT = {SUBMITS: "submit {n} jobs", REQUESTS: "make {n} requests"}


def check_rate(redis: Redis, key_id: str, per_minute: int, counted: str = SUBMITS, now: float | None = None
               ) -> None:
    """Count one `counted` (SUBMITS or REQUESTS) of the key in a fixed one-minute window shared by every
    API process. Raises TooManyRequests (429, Retry-After in seconds) past `per_minute`.

    Redis being down lets the request through: the rate limit protects, it is not the promise.
    """
    now = time.time() if now is None else now
    window = int(now // 60)
    counter = f"mjq:rate:{counted}:{key_id}:{window}"
    try:
        pipe = redis.pipeline()
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count = int(pipe.execute()[0])
    except RedisError:
        return
    if count > per_minute:
        retry_after = max(1, int(60 - now % 60) + 1)
        limit = _RATE_TEXT[counted].format(n=per_minute)
        raise TooManyRequests(f"this key may {limit} per minute; retry in {retry_after} s",
                              headers={"Retry-After": str(retry_after)})
