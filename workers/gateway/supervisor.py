"""The gateway process: one websocket per enabled Discord account it holds the lease of.

Every POLL period the supervisor reads the enabled discord accounts, renews the leases it
holds (a lost lease stops that account's thread at once), stops threads of accounts that
were disabled or removed, and tries to take every account no one holds. Each taken account
gets a thread that runs sessions one after another: resume after a reconnect, a new
IDENTIFY after an invalid session, backoff after failures, and on a fatal close the
account is retired (disabled with the code and reason; its jobs moved or failed).

With no enabled discord account the process just polls: `make run` starts it harmlessly.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from app.models import Account
from workers.drivers.discord_accounts import AccountRetirer
from workers.drivers.discord_events import EventStream
from workers.drivers.discord_rest import DEFAULT_USER_AGENT
from workers.gateway.connection import FATAL, LOST, REIDENTIFY, STOPPED, AccountLink, GatewayConnection, ResumePoint
from workers.gateway.ownership import Lease, Ownership

log = logging.getLogger(__name__)

#: Backoff between failed connection attempts, seconds (grows to the last value).
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 5.0, 10.0, 30.0)


@dataclass
class _Held:
    lease: Lease
    stop: threading.Event
    thread: threading.Thread


@dataclass
class Gateway:
    """Everything passed in: the database, Redis, the account secrets and the retirer."""

    session_factory: sessionmaker
    redis: Redis
    secrets: Callable[[Account], dict[str, str]]
    retirer: AccountRetirer
    holder: str
    gateway_url: str
    lease_ms: int = 15_000
    poll_seconds: float = 2.0
    held: dict[str, _Held] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ownership = Ownership(self.redis, self.holder, self.lease_ms)

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set, then close every session (resumable) and release every lease."""
        log.info("gateway %s: polling every %.1f s, lease %d ms", self.holder, self.poll_seconds, self.lease_ms)
        while not stop.is_set():
            try:
                self.tick()
            except (SQLAlchemyError, RedisError) as exc:
                log.warning("gateway poll failed (retrying): %s", exc)
            except Exception:  # noqa: BLE001 - one bad poll must not end the process (honcho would stop the stack)
                log.exception("gateway poll failed unexpectedly (retrying)")
            stop.wait(self.poll_seconds)
        for account_id in list(self.held):
            self._drop(account_id, release=True)

    def tick(self) -> None:
        """One poll: renew, stop what must stop, take what is free."""
        links = self._enabled_links()
        for account_id, held in list(self.held.items()):
            if not held.thread.is_alive():
                self._drop(account_id, release=True)
            elif account_id not in links:
                log.info("gateway: account %s is no longer enabled; closing its session", account_id)
                self._drop(account_id, release=True)
            elif not self.ownership.renew(held.lease):
                log.warning("gateway: lease of %s lost; stopping its session", account_id)
                self._drop(account_id, release=False)
        for account_id, link in links.items():
            if account_id in self.held:
                continue
            lease = self.ownership.acquire(account_id)
            if lease is None:
                continue
            log.info("gateway %s: holds account %s (fencing token %s)", self.holder, account_id, lease.token)
            stop = threading.Event()
            thread = threading.Thread(target=self._serve, args=(link, lease, stop), name=f"gateway-{account_id}",
                                      daemon=True)
            self.held[account_id] = _Held(lease, stop, thread)
            thread.start()

    def _drop(self, account_id: str, release: bool) -> None:
        held = self.held.pop(account_id)
        held.stop.set()
        held.thread.join(timeout=10)
        if release:
            try:
                self.ownership.release(held.lease)
            except RedisError as exc:
                log.warning("lease of %s not released (it expires): %s", account_id, exc)

    def _enabled_links(self) -> dict[str, AccountLink]:
        with self.session_factory() as session:
            accounts = session.scalars(select(Account).where(Account.driver == "discord",
                                                             Account.enable.is_(True))).all()
            links = {}
            for account in accounts:
                try:
                    settings: dict[str, Any] = {**(account.settings or {}), **self.secrets(account)}
                except Exception as exc:  # noqa: BLE001 - one unreadable account must not stop the others
                    log.error("gateway: account %s has no readable token: %s", account.id, exc)
                    continue
                if not settings.get("userToken"):
                    continue
                links[account.id] = AccountLink(account.id, str(settings["userToken"]),
                                                str(settings.get("channelId") or ""),
                                                str(settings.get("userAgent") or DEFAULT_USER_AGENT))
        return links

    def _serve(self, link: AccountLink, lease: Lease, stop: threading.Event) -> None:
        """Sessions one after another until stopped, fenced out, or fatally closed."""
        stream = EventStream(self.redis, link.account_id)
        kept = stream.resume_point()
        resume = ResumePoint(str(kept["session_id"]), int(kept["seq"]), str(kept["url"])) if kept else None
        failures = 0
        started = [time.monotonic()]  # popped by the first READY/RESUMED

        def publish(kind: str, data: dict[str, Any], point: ResumePoint) -> bool:
            return stream.append(kind, data, holder=lease.value, resume=point.to_json()) is not None

        def save(point: ResumePoint) -> bool:
            if started:
                log.info("gateway: account %s up %.2f s after its lease was taken", link.account_id,
                         time.monotonic() - started.pop())
            return stream.save_resume(lease.value, point.to_json())

        while not stop.is_set():
            conn = GatewayConnection(link, self.gateway_url, publish, save, stop, resume)
            outcome = conn.run()
            if outcome.kind in (STOPPED, LOST):
                return
            if outcome.kind == FATAL:
                reason = f"Discord gateway closed with {outcome.code}: {outcome.reason}"
                log.error("gateway: account %s: %s; disabling it", link.account_id, reason)
                stream.forget_resume()
                self.retirer.disable(link.account_id, reason)
                return
            kept = stream.resume_point()
            resume = None if outcome.kind == REIDENTIFY or not kept else \
                ResumePoint(str(kept["session_id"]), int(kept["seq"]), str(kept["url"]))
            if resume is None:
                stream.forget_resume()
            failures = 0 if outcome.ready else failures + 1
            delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)] if failures else 0.2
            log.info("gateway: account %s session ended (%s: %s); %s in %.1f s", link.account_id, outcome.kind,
                     outcome.reason, "resuming" if resume else "identifying", delay)
            stop.wait(delay)
