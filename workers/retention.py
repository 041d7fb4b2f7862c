"""Retention: finished tasks older than MJQ_RETENTION_DAYS go, with their images and webhook
history, a batch at a time (short transactions keyed by primary key, so no table is locked
for long). Idempotency records go after a day. The ledger is kept: it is the billing record.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.images import ImageStore
from app.models import Task, WebhookAttempt, WebhookDelivery, now_ms
from app.models_tenancy import IdempotencyRecord
from app.services.idempotency import KEEP_MS

log = logging.getLogger(__name__)

#: Tasks deleted per transaction; a sweep does at most `batches` of them.
BATCH = 500
DAY_MS = 86_400_000


def apply_retention(session_factory: sessionmaker, images: ImageStore, retention_days: int, batches: int = 4,
                    clock: Callable[[], int] = now_ms) -> dict[str, int]:
    """One pass. `retention_days` 0 keeps tasks forever. Returns what was deleted.

    Images go through the store (local folder or S3 bucket). A store that fails (a bucket that is
    down) leaves those files behind and is logged; the rows are gone either way.
    """
    now = clock()
    done = {"tasks": 0, "deliveries": 0, "idempotency_keys": 0, "images": 0}
    with session_factory() as session:
        result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - KEEP_MS))
        done["idempotency_keys"] = int(getattr(result, "rowcount", 0) or 0)
        session.commit()
    if retention_days <= 0:
        return done
    cutoff = now - retention_days * DAY_MS
    for _ in range(batches):
        with session_factory() as session:
            ids = list(session.scalars(
                select(Task.id).where(Task.status.in_(protocol.TERMINAL_STATUSES), Task.submit_time < cutoff)
                .order_by(Task.id).limit(BATCH)
            ))
            if not ids:
                break
            deliveries = list(session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.task_id.in_(ids))))
            if deliveries:
                session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
                session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(deliveries)))
            session.execute(delete(Task).where(Task.id.in_(ids)))
            session.commit()
        for task_id in ids:  # images after the rows: a crash leaves files, never rows pointing at nothing
            try:
                done["images"] += images.delete_task(task_id)
            except Exception as exc:  # noqa: BLE001 - botocore and OS errors alike: the next tasks still go
                log.warning("retention: images of task %s not deleted: %s", task_id, exc)
        done["tasks"] += len(ids)
        done["deliveries"] += len(deliveries)
    if any(done.values()):
        log.info("retention: deleted %s", done)
    return done
