"""Which account runs a job."""
from __future__ import annotations

import random

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import protocol
from app.models import Account, Task, now_ms
from app.schemas import AccountFilter


def eligible_accounts(session: Session, mode: str, bot_type: str, account_filter: AccountFilter) -> list[Account]:
    """Enabled accounts that support `mode` and `bot_type` and pass the request's accountFilter."""
    accounts = session.scalars(select(Account).where(Account.enable.is_(True)).order_by(Account.id)).all()
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
