"""Billing: a job is charged once, on SUCCESS, inside the transition that records the success.

The charge is an OutboxWriter (see workers/events.py): it writes in the same transaction as
the SUCCESS update, so a crash either loses both or keeps both. The SUCCESS transition can
happen once per task (a terminal row accepts no transition), and the ledger's unique
(kind, task_id) guards that promise a second time: never charged twice, whatever retries
happen. Failures and cancels are never charged.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import protocol
from app.models import Task, now_ms
from app.models_tenancy import ApiKey, LedgerEntry
from app.services.plans import price

CHARGE = "charge"
CREDIT = "credit"


class BillingWriter:
    """Charges the task's key the price of its action and mode when the task succeeds."""

    def __init__(self, prices: dict[str, tuple[int, int]]) -> None:
        self.prices = prices

    def write_in_transaction(self, session: Session, task: Task, data: dict[str, Any], seq: int
                             ) -> Callable[[], object] | None:
        if task.status != protocol.SUCCESS or not task.owner:
            return None
        cost = price(self.prices, task.action, task.mode)
        already = session.scalar(select(LedgerEntry.id).where(LedgerEntry.kind == CHARGE,
                                                              LedgerEntry.task_id == task.id))
        if cost <= 0 or already is not None:
            return None
        session.add(LedgerEntry(key_id=task.owner, kind=CHARGE, task_id=task.id, action=task.action, mode=task.mode,
                                amount=-cost, created_at=now_ms()))
        session.execute(update(ApiKey).where(ApiKey.id == task.owner, ApiKey.balance.is_not(None))
                        .values(balance=ApiKey.balance - cost))
        return None


def credit(session: Session, key_id: str, amount: int, note: str | None = None) -> int:
    """Add `amount` tokens to a key's balance (a metered key starts at 0); returns the new balance."""
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id).with_for_update())
    if key is None:
        raise KeyError(key_id)
    key.balance = (key.balance or 0) + amount
    session.add(LedgerEntry(key_id=key_id, kind=CREDIT, task_id=None, amount=amount, note=note, created_at=now_ms()))
    session.commit()
    return key.balance
