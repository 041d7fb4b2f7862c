"""Usage per key and statistics per day × mode × action, straight from the task and ledger tables."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app import protocol
from app.models import Task
from app.models_tenancy import LedgerEntry

DAY_MS = 86_400_000


def _counts() -> list[Any]:
    return [func.sum(case((Task.status == s, 1), else_=0)).label(s.lower())
            for s in (protocol.SUCCESS, protocol.FAILURE, protocol.CANCEL)]


def usage(session: Session, key_id: str | None, since_ms: int) -> dict[str, Any]:
    """Tasks by action × mode with success/failure/cancel counts, and tokens charged, since `since_ms`."""
    query = select(Task.action, Task.mode, func.count(), *_counts()).where(Task.submit_time >= since_ms)
    if key_id is not None:
        query = query.where(Task.owner == key_id)
    rows = session.execute(query.group_by(Task.action, Task.mode).order_by(Task.action, Task.mode)).all()
    charged = select(func.coalesce(func.sum(-LedgerEntry.amount), 0)).where(
        LedgerEntry.kind == "charge", LedgerEntry.created_at >= since_ms)
    if key_id is not None:
        charged = charged.where(LedgerEntry.key_id == key_id)
    return {
        "keyId": key_id, "since": since_ms, "tokensCharged": int(session.scalar(charged) or 0),
        "byActionMode": [{"action": a, "mode": m, "tasks": n, "success": int(ok or 0), "failure": int(bad or 0),
                          "cancel": int(cancel or 0)} for a, m, n, ok, bad, cancel in rows],
    }


def statistics(session: Session, since_ms: int) -> list[dict[str, Any]]:
    """Per UTC day × mode × action: success, failure and cancel counts of the tasks submitted that day."""
    day = func.floor(Task.submit_time / DAY_MS)
    rows = session.execute(
        select(day.label("day"), Task.mode, Task.action, *_counts())
        .where(Task.submit_time >= since_ms).group_by("day", Task.mode, Task.action)
        .order_by("day", Task.mode, Task.action)
    ).all()
    return [{"day": datetime.fromtimestamp(int(d) * 86_400, UTC).strftime("%Y-%m-%d"), "mode": mode,
             "action": action, "success": int(ok or 0), "failure": int(bad or 0), "cancel": int(cancel or 0)}
            for d, mode, action, ok, bad, cancel in rows]
