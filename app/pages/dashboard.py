"""What the dashboard shows: queue depth, slots per account, the last hour, statistics per day."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import protocol
from app.api.accounts import health
from app.models import Task, now_ms
from app.services import usage
from app.services.account_admin import list_accounts

HOUR_MS = 3_600_000
#: The statistics table covers this many days.
STATISTICS_DAYS = 14


def queue_depth(session: Session) -> list[dict[str, Any]]:
    """NOT_START tasks per Celery queue (waiting for a worker or for an account slot)."""
    rows = session.execute(select(Task.queue, func.count()).where(Task.status == protocol.NOT_START)
                           .group_by(Task.queue).order_by(Task.queue)).all()
    return [{"queue": queue, "notStarted": int(count)} for queue, count in rows]


def last_hour(session: Session, now: int) -> dict[str, int]:
    """Success, failure and cancel counts of the tasks submitted in the last hour."""
    totals = {"tasks": 0, "success": 0, "failure": 0, "cancel": 0}
    for row in usage.usage(session, None, now - HOUR_MS)["byActionMode"]:
        for name in totals:
            totals[name] += row[name]
    return totals


def slots(session: Session) -> list[dict[str, Any]]:
    """Per account: enabled or why not, and per pool the jobs in flight and waiting for a slot (the scheduler's)."""
    accounts, _total = list_accounts(session)
    return [{"id": a.id, "name": a.name, "enable": a.enable, "disabledReason": a.disabled_reason,
             "health": health(a)} for a in accounts]


def overview(session: Session) -> dict[str, Any]:
    """Everything the dashboard template renders."""
    now = now_ms()
    return {"queues": queue_depth(session), "accounts": slots(session),
            "last_hour": last_hour(session, now),
            "statistics": usage.statistics(session, now - STATISTICS_DAYS * 86_400_000),
            "statistics_days": STATISTICS_DAYS}
