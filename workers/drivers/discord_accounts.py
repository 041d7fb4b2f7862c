"""Taking a Discord account out of service, and what happens to its jobs.

Called by the gateway (a close code Discord does not let a client resume from, e.g. 4004
Authentication failed) and by the driver (Pending mod message, Blocked, Plan Cancelled,
Subscription required, a captcha; Credits exhausted). The account is disabled (or limited
to RELAX), then:

- followers of its running jobs learn it from an ACCOUNT_DISABLED event in the account's
  stream and stop; the running jobs themselves are failed with the reason right here, so
  none stays SUBMITTED even when no worker is following it;
- each waiting job (NOT_START, never sent upstream) that is not a follow-up moves to
  another eligible account: it is queued there, its claim is bumped (the execution still
  waiting for the old account's slot loses it at its next write) and a new `mj.execute`
  goes out; a job with nowhere to go, a follow-up (pinned to the parent's account) or one
  that may already be on its way upstream fails with the reason.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.models import Account, Task, now_ms
from app.services.accounts import concurrency_for
from workers.dispatch import Dispatcher
from workers.drivers import discord_parse
from workers.drivers.discord_events import ACCOUNT_DISABLED, EventStream
from workers.events import ClaimLost, Listener, TaskEvents
from workers.executor import admit_elsewhere
from workers.scheduler import Scheduler, pool_of

log = logging.getLogger(__name__)

#: What Credits exhausted does to the account: limit it to RELAX, or disable it.
CREDITS_RELAX, CREDITS_DISABLE = "relax", "disable"
MAX_REASON_CHARS = 1000


@dataclass
class AccountRetirer:
    session_factory: sessionmaker
    redis: Redis | None
    scheduler: Scheduler | None = None
    dispatcher: Dispatcher | None = None
    listeners: list[Listener] = field(default_factory=list)
    credits_policy: str = CREDITS_RELAX
    clock: Callable[[], int] = now_ms

    def apply(self, action: str | None, account_id: str, reason: str) -> None:
        """What an error reading (`discord_parse.DISABLE_ACCOUNT`, `CREDITS_EXHAUSTED`) does to the account."""
        if action == discord_parse.DISABLE_ACCOUNT:
            self.disable(account_id, reason)
        elif action == discord_parse.CREDITS_EXHAUSTED:
            if self.credits_policy == CREDITS_DISABLE:
                self.disable(account_id, reason)
            else:
                self.relax_only(account_id, reason)

    def disable(self, account_id: str, reason: str) -> dict[str, int]:
        """Disable the account with `reason`; fail its running jobs, move or fail its waiting ones."""
        with self.session_factory() as session:
            account = session.get(Account, account_id)
            if account is not None and account.enable:
                account.enable = False
                account.disabled_reason = reason[:MAX_REASON_CHARS]
                account.updated_at = self.clock()
                session.commit()
                log.warning("account %s disabled: %s", account_id, reason)
        # Waiting jobs move first: a running job that stops frees a slot, which a waiting job must not get.
        done = self._evacuate(account_id, reason, modes=None, waiting=True)
        if self.redis is not None:
            try:
                EventStream(self.redis, account_id).append(ACCOUNT_DISABLED, {"reason": reason})
            except RedisError as exc:
                log.warning("could not announce that %s is disabled (its jobs are failed anyway): %s", account_id, exc)
        running = self._evacuate(account_id, reason, modes=None, waiting=False)
        return {key: done[key] + running[key] for key in done}

    def relax_only(self, account_id: str, reason: str) -> dict[str, int]:
        """Fast time is used up: keep the account for RELAX only (or disable it when it has no relax slots)."""
        with self.session_factory() as session:
            account = session.get(Account, account_id)
            if account is None:
                return {}
            if "RELAX" not in (account.modes or []) or account.relax_concurrency < 1:
                session.rollback()
                return self.disable(account_id, reason)
            account.modes = ["RELAX"]
            account.updated_at = self.clock()
            session.commit()
        log.warning("account %s limited to RELAX: %s", account_id, reason)
        return self._evacuate(account_id, reason, modes={"FAST", "TURBO"}, waiting=True)

    def _evacuate(self, account_id: str, reason: str, modes: set[str] | None, waiting: bool) -> dict[str, int]:
        """Move or fail the account's waiting jobs (`waiting`), else fail its running ones."""
        done = {"failed": 0, "moved": 0}
        with self.session_factory() as session:
            rows = session.execute(
                select(Task.id, Task.status, Task.mode, Task.parent_id, Task.upstream_state)
                .where(Task.account_id == account_id, Task.status.in_(protocol.OPEN_STATUSES)).order_by(Task.id)
            ).all()
        for task_id, status, mode, parent_id, upstream_state in rows:
            if modes is not None and mode not in modes:
                continue
            if status != protocol.NOT_START:
                if not waiting and self._fail(task_id, reason):
                    done["failed"] += 1
                continue
            if not waiting:
                continue
            if parent_id is None and upstream_state is None and self._move(task_id, account_id):
                done["moved"] += 1
            elif self._fail(task_id, f"{reason} (account {account_id}; no other account could take the job)"):
                done["failed"] += 1
        if any(done.values()):
            log.warning("account %s: %s", account_id, done)
        return done

    def _fail(self, task_id: int, reason: str) -> bool:
        try:
            TaskEvents(self.session_factory, self.redis, task_id, None, self.listeners, self.clock).transition(
                status=protocol.FAILURE, progress="", failReason=reason[:4000], finishTime=self.clock())
            return True
        except ClaimLost:
            return False

    def _move(self, task_id: int, old_account: str) -> bool:
        """Queue a waiting job on another eligible account and send it again. False when it cannot move."""
        with self.session_factory() as session:
            task = session.get(Task, task_id)
            if task is None or task.status != protocol.NOT_START:
                return False
            chosen = admit_elsewhere(session, self.scheduler, task, {old_account})
            if chosen is None:
                return False
            properties: dict[str, Any] = {**(task.properties or {}), "discordInstanceId": chosen.id}
            # Bumping attempt takes the job from the execution still waiting for the old account's slot.
            moved = session.execute(
                update(Task).where(Task.id == task_id, Task.seq == task.seq, Task.status == protocol.NOT_START,
                                   Task.upstream_state.is_(None))
                .values(account_id=chosen.id, attempt=task.attempt + 1, seq=task.seq + 1, properties=properties,
                        updated_at=self.clock(), enqueued_at=None)
                .execution_options(synchronize_session=False)).rowcount
            session.commit()
            queue, action, mode = task.queue, task.action, task.mode
        if moved != 1:
            self._forget(chosen.id, mode, task_id, chosen)
            return False
        self._forget(old_account, mode, task_id, None)
        if self.dispatcher is not None and self.dispatcher.execute(task_id, action, queue):
            with self.session_factory() as session:
                session.execute(update(Task).where(Task.id == task_id).values(enqueued_at=self.clock()))
                session.commit()
        log.info("task %s moved from account %s to %s", task_id, old_account, chosen.id)
        return True

    def _forget(self, account_id: str, mode: str, task_id: int, account: Account | None) -> None:
        if self.scheduler is None:
            return
        try:
            self.scheduler.forget(account_id, pool_of(mode), task_id,
                                  concurrency_for(account, mode) if account is not None else 1)
        except RedisError as exc:
            log.warning("queue entry of task %s on %s not dropped (the sweeper will): %s", task_id, account_id, exc)
