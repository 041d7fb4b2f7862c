"""Running one job: claim the row, submit upstream once, follow it to the end.

Plain functions and classes, no Celery: the `mj.execute` shell calls `Executor.execute`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.image_variants import THUMBNAIL_PIXELS, store_variants
from app.images import ImageStore
from app.models import Account, Task, now_ms
from app.services.accounts import concurrency_for
from workers.drivers.base import Driver, Job, UpstreamError
from workers.events import ClaimLost, Listener, TaskEvents, claim
from workers.scheduler import Lease, LeaseKeeper, LeaseLost, Scheduler, WaitTimeout, live_attempt, pool_of

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: A job whose worker died this many times while running it is failed instead of run again.
MAX_ATTEMPTS = 3

# What an execution ended with (returned for logs and tests).
DONE = "done"
SKIPPED = "skipped"
LOST = "lost"
FAILED = "failed"
INTERRUPTED = "interrupted"


class _Reporter:
    """Turns driver reports into guarded transitions."""

    def __init__(self, events: TaskEvents, clock: Callable[[], int],
                 variants: Callable[[str | None, Image.Image | None], dict[str, Any]] | None = None) -> None:
        self.events = events
        self.clock = clock
        # Stores the final image's thumbnail and grid cells; returns the properties naming them.
        self.variants = variants

    def started(self, properties: dict[str, Any] | None = None) -> None:
        self.events.transition(properties=properties, status=protocol.IN_PROGRESS)

    def progress(self, percent: int, image_url: str | None, properties: dict[str, Any] | None = None) -> None:
        self.events.transition(properties=properties, status=protocol.IN_PROGRESS, progress=f"{percent}%",
                               imageUrl=image_url)

    def succeeded(self, image_url: str | None, buttons: list[dict[str, Any]], properties: dict[str, Any],
                  prompt_en: str | None = None, image: Image.Image | None = None) -> None:
        changes: dict[str, Any] = {"status": protocol.SUCCESS, "progress": "100%", "imageUrl": image_url,
                                   "buttons": buttons, "finishTime": self.clock(), "failReason": None}
        if prompt_en is not None:
            changes["promptEn"] = prompt_en
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
            attempt = claim(session, task_id, seen_attempt, self.worker, self.clock)
            if attempt is None:
                return SKIPPED
            account = session.get(Account, task.account_id) if task.account_id else None
            job = Job(
                task_id=task.id, action=task.action, prompt=task.prompt_en or task.prompt or "", mode=task.mode,
                bot_type=task.bot_type, nonce=str((task.properties or {}).get("nonce") or task.id),
                account_id=task.account_id or "", account_settings=self._settings_of(account),
                inputs=dict(task.inputs or {}),
            )
            upstream_id, upstream_state = task.upstream_id, task.upstream_state
            submit_ms = task.submit_time
        events = TaskEvents(self.session_factory, self.redis, task_id, attempt, self.listeners, self.clock)
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
            lease = self._acquire(account, job, submit_ms)
            try:
                if upstream_state != "SUBMITTED" or not upstream_id:
                    # Recorded before the call: a crash inside it leaves SUBMITTING, so the next
                    # execution knows a duplicate submission is possible.
                    events.transition(quiet=True, upstream_state="SUBMITTING")
                    lease = self._still_held(lease, account, job, submit_ms)
                    if lease is not None:
                        job = replace(job, slot_token=lease.token, slot_index=lease.slot)
                    upstream_id = driver.submit(job)
                    events.transition(upstream_id=upstream_id, upstream_state="SUBMITTED",
                                      status=protocol.SUBMITTED, progress="0%", startTime=self.clock())
                driver.follow(job, upstream_id, _Reporter(events, self.clock, self._variants(job)))
            finally:
                self._release(lease)
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
        except DBAPIError:
            raise  # the database is unreachable: nothing was persisted, so the message must not be acked
        except RedisError as exc:
            # Redis went away under the job (slots, heartbeats): the job is not at fault. Its heartbeat
            # stops, so the reconciler sends it again once Redis is back; the next execution resumes it.
            log.warning("task %s interrupted, Redis unavailable: %s", task_id, exc)
            return INTERRUPTED
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task_id)
            self._fail(events, f"[Internal Error] {type(exc).__name__}: {exc}")
            return FAILED

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
