"""Running one job: claim the row, submit upstream once, follow it to the end.

Plain functions and classes, no Celery: the `mj.execute` shell calls `Executor.execute`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from app import protocol
from app.image_variants import THUMBNAIL_PIXELS, store_variants
from app.images import ImageStore
from app.models import Account, Task, now_ms
from app.schemas import AccountFilter
from app.services.accounts import choose_account, concurrency_for, eligible_accounts
from workers.drivers.base import Driver, Job, UpstreamBusy, UpstreamError, abandon
from workers.events import ClaimLost, Listener, TaskEvents, claim
from workers.scheduler import (
    Candidate,
    Lease,
    LeaseKeeper,
    LeaseLost,
    QueueFull,
    Scheduler,
    WaitTimeout,
    live_attempt,
    pool_of,
)

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: A job whose worker died this many times while running it is failed instead of run again.
MAX_ATTEMPTS = 3
#: Seconds a job refused as busy (UpstreamBusy) waits, off its slot, before each new try on its account.
BUSY_BACKOFF_SECONDS = (2.0, 5.0, 15.0)
#: The database is unreachable, or every pooled connection stayed busy past the pool's timeout (hundreds
#: of threads in one process): not the job's fault, so the execution is retried (workers/tasks/execute.py).
DATABASE_UNAVAILABLE = (DBAPIError, PoolTimeout)

# What an execution ended with (returned for logs and tests).
DONE = "done"
SKIPPED = "skipped"
LOST = "lost"
FAILED = "failed"
INTERRUPTED = "interrupted"


def admit_elsewhere(session: Session, scheduler: Scheduler | None, task: Task, exclude: set[str],
                    drivers: set[str] | None = None) -> Account | None:
    """Queue `task` on another eligible account (not in `exclude`; with a driver of `drivers` when given), chosen
    and admitted as a new submit is; None when no account can take it (none eligible, every queue full, Redis
    down)."""
    candidates = [a for a in eligible_accounts(session, task.mode, task.bot_type, AccountFilter())
                  if a.id not in exclude and (drivers is None or a.driver in drivers)]
    if not candidates:
        return None
    if scheduler is None:
        return choose_account(session, candidates, task.mode)
    try:
        admission = scheduler.admit([Candidate(a.id, concurrency_for(a, task.mode), a.queue_size, a.weight)
                                     for a in candidates], pool_of(task.mode), task.id, task.submit_time)
    except (QueueFull, RedisError) as exc:
        log.warning("task %s cannot move: %s", task.id, exc)
        return None
    return next(a for a in candidates if a.id == admission.account_id)


@dataclass
class _Placement:
    """Where an execution runs now: a busy upstream may move it to another account before it is submitted."""

    account: Account
    driver: Driver
    job: Job
    lease: Lease | None


def _upstream_prompt(task: Task) -> str:
    """The prompt the upstream is sent: promptEn, less the pad images' URLs that lead it (see Submitter.create)."""
    clean = (task.inputs or {}).get("upstreamPrompt")
    return str(clean) if isinstance(clean, str) else task.prompt_en or task.prompt or ""


class _Reporter:
    """Turns driver reports into guarded transitions.

    The prompt fields follow midjourney-proxy: a BLEND, submitted without a prompt, takes `prompt` and
    `promptEn` from the bot's start message (its `finalPrompt`, or the promptEn an upstream proxy reports), and
    a DESCRIBE's result text becomes its `prompt` as well as its `promptEn`.
    """

    def __init__(self, events: TaskEvents, clock: Callable[[], int],
                 variants: Callable[[str | None, Image.Image | None], dict[str, Any]] | None = None,
                 action: str = "") -> None:
        self.events = events
        self.clock = clock
        # Stores the final image's thumbnail and grid cells; returns the properties naming them.
        self.variants = variants
        self.action = action

    def _blend_prompt(self, properties: dict[str, Any] | None) -> dict[str, Any]:
        final = (properties or {}).get("finalPrompt") if self.action == protocol.BLEND else None
        return {"prompt": final, "promptEn": final} if isinstance(final, str) and final.strip() else {}

    def started(self, properties: dict[str, Any] | None = None) -> None:
        self.events.transition(properties=properties, status=protocol.IN_PROGRESS, **self._blend_prompt(properties))

    def progress(self, percent: int, image_url: str | None, properties: dict[str, Any] | None = None) -> None:
        self.events.transition(properties=properties, status=protocol.IN_PROGRESS, progress=f"{percent}%",
                               imageUrl=image_url)

    def succeeded(self, image_url: str | None, buttons: list[dict[str, Any]], properties: dict[str, Any],
                  prompt_en: str | None = None, image: Image.Image | None = None) -> None:
        changes: dict[str, Any] = {"status": protocol.SUCCESS, "progress": "100%", "imageUrl": image_url,
                                   "buttons": buttons, "finishTime": self.clock(), "failReason": None}
        if prompt_en is not None:
            changes["promptEn"] = prompt_en
            if self.action in (protocol.DESCRIBE, protocol.BLEND):
                changes["prompt"] = prompt_en
        else:
            changes.update(self._blend_prompt(properties))
        if self.variants is not None:
            properties = {**properties, **self.variants(image_url, image)}
        self.events.transition(properties=properties, **changes)


@dataclass
class Executor:
    """Everything an execution needs, passed in (fakeredis, a fake clock and fake drivers fit)."""

    session_factory: sessionmaker
    redis: Redis | None
    drivers: dict[str, Driver]
    worker: str
    listeners: list[Listener] | None = None
    clock: Callable[[], int] = now_ms
    scheduler: Scheduler | None = None
    keeper: LeaseKeeper | None = None
    max_wait_seconds: float = 900.0
    #: Decrypts an account's secrets (upstream key, Discord token); merged into Job.account_settings.
    secrets: Callable[[Account], dict[str, Any]] | None = None
    #: Where final images are stored: their thumbnail and grid cells go there too (None = none made).
    images: ImageStore | None = None
    thumbnail_pixels: int = THUMBNAIL_PIXELS
    busy_backoff_seconds: tuple[float, ...] = BUSY_BACKOFF_SECONDS
    sleep: Callable[[float], None] = time.sleep

    def execute(self, task_id: int) -> str:
        """Run task `task_id` to a terminal state (or stop when another execution holds it)."""
        with self.session_factory() as session:
            task = session.get(Task, task_id)
            if task is None or task.status not in protocol.OPEN_STATUSES:
                return SKIPPED
            seen_attempt = task.attempt
            if seen_attempt > 0 and self._still_running(task_id, seen_attempt):
                # A second message for a job whose execution is alive (Redis redelivered it after the
                # visibility timeout, or the reconciler sent it): dropping it keeps one execution.
                log.info("task %s: attempt %s is alive elsewhere; duplicate message dropped", task_id, seen_attempt)
                return SKIPPED
            attempt = claim(session, task_id, seen_attempt, self.worker, self.clock, row=task)
            if attempt is None:
                return SKIPPED
            account = session.get(Account, task.account_id) if task.account_id else None
            job = Job(
                task_id=task.id, action=task.action, prompt=_upstream_prompt(task), mode=task.mode,
                bot_type=task.bot_type, nonce=str((task.properties or {}).get("nonce") or task.id),
                account_id=task.account_id or "", account_settings=self._settings_of(account),
                inputs=dict(task.inputs or {}),
            )
            upstream_id, upstream_state = task.upstream_id, task.upstream_state
            submit_ms = task.submit_time
        # The first transition starts from the claimed row: a write since then makes its UPDATE miss and re-read.
        events = TaskEvents(self.session_factory, self.redis, task_id, attempt, self.listeners, self.clock, row=task)
        log.info("task %s %s attempt %s on %s", task_id, job.action, attempt, self.worker)
        if self.keeper is not None:
            try:
                self.keeper.alive(task_id, attempt)
            except RedisError as exc:
                log.warning("task %s runs without a heartbeat, Redis unavailable: %s", task_id, exc)
        try:
            return self._run(events, job, account, attempt, upstream_id, upstream_state, submit_ms)
        finally:
            if self.keeper is not None:
                self.keeper.done(task_id)

    def _variants(self, job: Job) -> Callable[[str | None, Image.Image | None], dict[str, Any]] | None:
        images = self.images
        if images is None:
            return None
        return lambda url, image: store_variants(images, job.task_id, job.action, url, self.thumbnail_pixels, image)

    def _still_running(self, task_id: int, attempt: int) -> bool:
        if self.keeper is None:
            return False
        try:
            return live_attempt(self.keeper.scheduler.redis, task_id) == attempt
        except RedisError:
            return False

    def _run(self, events: TaskEvents, job: Job, account: Account | None, attempt: int, upstream_id: str | None,
             upstream_state: str | None, submit_ms: int) -> str:
        task_id = job.task_id
        try:
            driver = self.drivers.get(account.driver) if account is not None else None
            refusal = None
            if attempt > MAX_ATTEMPTS:
                refusal = f"the job's worker stopped {MAX_ATTEMPTS} times while running it; not retried"
            elif account is None or not account.enable:
                why = f": {account.disabled_reason}" if account is not None and account.disabled_reason else ""
                refusal = f"account {job.account_id or '-'} is not available{why}"
            elif driver is None:
                refusal = f"no driver {account.driver!r} in this worker"
            if refusal is not None or account is None or driver is None:
                self._forget(account, job)
                self._fail(events, refusal or "no account")
                return FAILED
            at = _Placement(account, driver, job, self._acquire(account, job, submit_ms))
            try:
                if upstream_state != "SUBMITTED" or not upstream_id:
                    upstream_id = self._submit(events, at, attempt, submit_ms)
                    try:
                        events.transition(upstream_id=upstream_id, upstream_state="SUBMITTED",
                                          status=protocol.SUBMITTED, progress="0%", startTime=self.clock())
                    except ClaimLost:
                        abandon(at.driver, at.job, upstream_id)
                        raise
                at.driver.follow(at.job, upstream_id, _Reporter(events, self.clock, self._variants(at.job),
                                                                  at.job.action))
            finally:
                self._release(at.lease)
            return DONE
        except WaitTimeout as exc:
            self._fail(events, str(exc))
            return FAILED
        except ClaimLost as exc:
            log.info("task %s: %s", task_id, exc)
            return LOST
        except UpstreamError as exc:
            self._fail(events, str(exc) or type(exc).__name__)
            return FAILED
        except DATABASE_UNAVAILABLE:
            raise  # nothing was persisted: the message must not be acked, the job is tried again
        except RedisError as exc:
            # Redis went away under the job (slots, heartbeats): the job is not at fault. Its heartbeat
            # stops, so the reconciler sends it again once Redis is back; the next execution resumes it.
            log.warning("task %s interrupted, Redis unavailable: %s", task_id, exc)
            return INTERRUPTED
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task_id)
            self._fail(events, f"[Internal Error] {type(exc).__name__}: {exc}")
            return FAILED

    def _submit(self, events: TaskEvents, at: _Placement, attempt: int, submit_ms: int) -> str:
        """Submit the job upstream once it holds a slot; returns the upstream reference.

        An upstream with no room (UpstreamBusy) started nothing: a new job moves to another eligible account
        (its slot given back, admitted there, the move recorded on the row) and is submitted there; a follow-up
        (pinned to its parent's account), or a job no other account can take, gives its slot back and queues
        again on its account after each of `busy_backoff_seconds`. Raises UpstreamBusy after the last.
        """
        delays = iter(self.busy_backoff_seconds)
        tried = [at.account.id]
        while True:
            # Recorded before the call: a crash inside it leaves SUBMITTING, so the next
            # execution knows a duplicate submission is possible.
            events.transition(quiet=True, upstream_state="SUBMITTING")
            at.lease = self._still_held(at.lease, at.account, at.job, submit_ms)
            if at.lease is not None:
                at.job = replace(at.job, slot_token=at.lease.token, slot_index=at.lease.slot)
            try:
                return at.driver.submit(at.job)
            except UpstreamBusy as exc:
                self._release(at.lease)
                at.lease = None
                moved = self._move(at, attempt, set(tried))
                if moved is not None:
                    log.info("task %s: account %s is busy (%s); moved to account %s", at.job.task_id, tried[-1],
                             exc, moved.id)
                    tried.append(moved.id)
                else:
                    delay = next(delays, None)
                    if delay is None:
                        raise UpstreamBusy(f"{exc}; gave up after {len(tried) + len(self.busy_backoff_seconds)} "
                                           f"tries (accounts tried: {', '.join(tried)})") from None
                    log.info("task %s: account %s is busy (%s); queued again in %g s", at.job.task_id,
                             at.account.id, exc, delay)
                    self.sleep(delay)
                at.lease = self._acquire(at.account, at.job, submit_ms)

    def _move(self, at: _Placement, attempt: int, tried: set[str]) -> Account | None:
        """Put a new job (not a follow-up) on another eligible account and record it on the row: its account and
        `properties.movedFrom`. Updates `at` and returns the account, or None when the job stays where it is.
        Raises ClaimLost when the row changed hands or ended meanwhile."""
        with self.session_factory() as session:
            task = session.get(Task, at.job.task_id)
            if task is None or task.parent_id is not None:
                return None
            chosen = admit_elsewhere(session, self.scheduler, task, tried, set(self.drivers))
            if chosen is None:
                return None
            properties = {**(task.properties or {}), "discordInstanceId": chosen.id,
                          "movedFrom": [*(task.properties or {}).get("movedFrom", []), at.account.id]}
            # Fenced like a transition: a cancel or another claim since the read leaves the row alone.
            moved = session.execute(
                update(Task).where(Task.id == task.id, Task.attempt == attempt, Task.status == protocol.NOT_START)
                .values(account_id=chosen.id, properties=properties, seq=Task.seq + 1, updated_at=self.clock())
                .execution_options(synchronize_session=False)).rowcount
            session.commit()
        job = replace(at.job, account_id=chosen.id, account_settings=self._settings_of(chosen), slot_token=None,
                      slot_index=0)
        if moved != 1:
            self._forget(chosen, job)
            raise ClaimLost(f"task {job.task_id} changed while it moved off the busy account {at.account.id}")
        at.account, at.driver, at.job = chosen, self.drivers[chosen.driver], job
        return chosen

    def _settings_of(self, account: Account | None) -> dict[str, Any]:
        if account is None:
            return {}
        merged = dict(account.settings or {})
        if self.secrets is not None and account.secrets:
            merged.update(self.secrets(account))
        return merged

    def _acquire(self, account: Account, job: Job, submit_ms: int) -> Lease | None:
        """Wait (FIFO, blocking) for a slot of the job's account and pool; None without a scheduler."""
        if self.scheduler is None:
            return None
        lease = self.scheduler.acquire(account.id, pool_of(job.mode), job.task_id, concurrency_for(account, job.mode),
                                       submit_ms, self.max_wait_seconds)
        if self.keeper is not None:
            self.keeper.hold(lease)
        return lease

    def _still_held(self, lease: Lease | None, account: Account, job: Job, submit_ms: int) -> Lease | None:
        """Fencing: a holder paused past its lease must not call the upstream; it queues again instead."""
        for _ in range(MAX_ATTEMPTS):
            if lease is None or self.scheduler is None:
                return lease
            try:
                self.scheduler.check(lease)
                return lease
            except LeaseLost as exc:
                log.warning("task %s: %s; waiting for a slot again", job.task_id, exc)
                self._release(lease)
                lease = self._acquire(account, job, submit_ms)
        raise WaitTimeout(f"task {job.task_id} lost its slot {MAX_ATTEMPTS} times before the upstream call")

    def _forget(self, account: Account | None, job: Job) -> None:
        """Take a job that will not run out of its account's queue, so it blocks no one behind it."""
        if self.scheduler is None or not job.account_id:
            return
        limit = concurrency_for(account, job.mode) if account is not None else 1
        try:
            self.scheduler.forget(job.account_id, pool_of(job.mode), job.task_id, limit)
        except Exception as exc:  # noqa: BLE001 - the sweeper removes it later
            log.warning("could not drop task %s from its queue: %s", job.task_id, exc)

    def _release(self, lease: Lease | None) -> None:
        if lease is None or self.scheduler is None:
            return
        if self.keeper is not None:
            self.keeper.drop(lease)
        try:
            self.scheduler.release(lease)
        except Exception as exc:  # noqa: BLE001 - Redis down: the lease expires by itself
            log.warning("release of task %s's slot failed (it expires in its TTL): %s", lease.task_id, exc)

    def _fail(self, events: TaskEvents, reason: str) -> None:
        try:
            events.transition(status=protocol.FAILURE, progress="", failReason=reason[:4000],
                              finishTime=self.clock())
        except ClaimLost:
            pass
