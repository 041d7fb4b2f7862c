"""Which account runs a job."""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import protocol
from app.models import ACCOUNT_VERSIONS, ACCOUNTS, Account, Task, now_ms
from app.schemas import AccountFilter

log = logging.getLogger(__name__)

#: The accounts' version (migration 0005): read when the cache is filled, and returned by every task INSERT.
ACCOUNTS_VERSION = select(ACCOUNT_VERSIONS.c.version).where(ACCOUNT_VERSIONS.c.id == 1)


def enabled_accounts(session: Session) -> list[Account]:
    """The enabled accounts, ordered by id."""
    return list(session.scalars(select(Account).where(Account.enable.is_(True)).order_by(Account.id)))


def eligible_accounts(session: Session, mode: str, bot_type: str, account_filter: AccountFilter) -> list[Account]:
    """Enabled accounts that support `mode` and `bot_type` and pass the request's accountFilter."""
    return eligible_among(enabled_accounts(session), mode, bot_type, account_filter)


def eligible_among(accounts: Sequence[Account], mode: str, bot_type: str, account_filter: AccountFilter
                   ) -> list[Account]:
    """Those of the enabled `accounts` that support `mode` and `bot_type` and pass the request's accountFilter."""
    out = []
    for account in accounts:
        if mode not in (account.modes or []):
            continue
        if account.bot_types and bot_type not in account.bot_types:
            continue
        if account_filter.instance_id is not None and account.id != account_filter.instance_id:
            continue
        if account_filter.remix is not None and account.remix != account_filter.remix:
            continue
        out.append(account)
    return out


class AccountDirectory:
    """The enabled accounts as of a version of the `accounts` table, cached in one process.

    Loading them for every submit was ~20 % of a submit's CPU with two accounts and ~40 % with two hundred
    (bench P1). A trigger bumps `account_versions` at every write to `accounts` (migration
    0005), and the INSERT of each new task returns that version in the same statement: a submit placed with
    an older list is rolled back and placed again from a fresh one (`Submitter.create`), so a change by any
    writer, in any process, holds for every task inserted after it committed, as when each submit read the
    table. Without the version row (a schema made without the migrations) nothing is cached.
    """

    def __init__(self) -> None:
        self._cached: tuple[int, list[Account]] | None = None
        self._warned = False

    def enabled(self, session: Session, fresh: bool = False) -> tuple[int | None, list[Account]]:
        """(version, the enabled accounts ordered by id): the cached list, else (or when `fresh`) read now and
        cached."""
        cached = self._cached
        if cached is not None and not fresh:
            return cached
        # The version first: a write committed between the two reads makes the list newer than its version, which
        # only costs a second placement.
        version = session.scalar(ACCOUNTS_VERSION)
        enabled = select(ACCOUNTS).where(ACCOUNTS.c.enable.is_(True)).order_by(ACCOUNTS.c.id)
        rows = session.execute(enabled).mappings().all()
        # Transient copies, in no session: threads share them read-only, and no commit expires them.
        accounts = [Account(**row) for row in rows]
        if version is not None:
            self._cached = (version, accounts)
        elif not self._warned:  # every submit now reads the accounts: ~30 % more CPU per submit (bench P1)
            self._warned = True
            log.warning("account_versions has no row 1, so the enabled accounts are read at every submit; restore it "
                        "with a version above any it held: INSERT INTO account_versions (id, version) VALUES "
                        "(1, <epoch ms>)")
        return version, accounts

    def forget(self, version: int) -> None:
        """Drop the cached list if it is still that of `version` (another thread may have read a newer one)."""
        cached = self._cached
        if cached is not None and cached[0] == version:
            self._cached = None


def concurrency_for(account: Account, mode: str) -> int:
    """Slots of `account` for `mode`: FAST and TURBO share the fast slots, RELAX has its own."""
    return account.relax_concurrency if mode == "RELAX" else account.fast_concurrency


def choose_account(session: Session, candidates: list[Account], mode: str, rng: random.Random | None = None
                   ) -> Account:
    """BestWaitIdle: the account with the lowest (open jobs - slots) wins; ties are broken at random."""
    rng = rng or random.Random()
    open_counts = dict(session.execute(
        select(Task.account_id, func.count())
        .where(Task.status.in_(protocol.OPEN_STATUSES), Task.account_id.in_([a.id for a in candidates]))
        .group_by(Task.account_id)
    ).all())
    waits = {a.id: max(open_counts.get(a.id, 0) - concurrency_for(a, mode), -1) for a in candidates}
    best = min(waits.values())
    return rng.choice([a for a in candidates if waits[a.id] == best])


def seed_simulator_accounts(session: Session, count: int) -> int:
    """Create `count` simulator accounts when there is no account at all; returns how many were made."""
    if session.scalar(select(func.count()).select_from(Account)):
        return 0
    now = now_ms()
    for n in range(1, count + 1):
        session.add(Account(
            id=f"sim-{n}", name=f"Simulator {n}", driver="simulator", settings={},
            modes=["FAST", "TURBO", "RELAX"], fast_concurrency=12, relax_concurrency=3, queue_size=50,
            weight=1, remix=False, bot_types=list(protocol.BOT_TYPES), timeout_minutes=5, enable=True,
            created_at=now, updated_at=now,
        ))
    session.commit()
    return count
