"""Retention: finished tasks older than MJQ_RETENTION_DAYS go, with their images and webhook
history, a batch at a time (short transactions keyed by primary key, so no table is locked
for long). Idempotency records go after a day. The ledger is kept: it is the billing record.

Webhook history follows the same age, measured on each row: a task whose webhook is still
owed (a delivery pending or being sent, e.g. a receiver down for days, or a redelivery just
clicked) stays until that delivery settles, because the webhook promise outlives retention;
and a task that stays past the age because it is still open keeps only its recent
deliveries: the ones that settled before the cutoff go without it.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from app import protocol
from app.images import ImageStore, upload_day
from app.models import Task, WebhookAttempt, WebhookDelivery, now_ms
from app.models_tenancy import IdempotencyRecord
from app.services.idempotency import KEEP_MS
from app.services.tenancy import UNFINISHED
from workers.webhooks import DELIVERING, PENDING

log = logging.getLogger(__name__)

#: Rows deleted per transaction; a pass does at most `batches` of them per kind (tasks, deliveries).
BATCH = 500
DAY_MS = 86_400_000
#: Deliveries still moving: their task is not deleted while one of them is.
OPEN_DELIVERIES = (PENDING, DELIVERING)
#: The day before which each store had its uploads deleted last, in this process.
_uploads_cleared: weakref.WeakKeyDictionary[ImageStore, str] = weakref.WeakKeyDictionary()


def apply_retention(session_factory: sessionmaker, images: ImageStore, retention_days: int, batches: int = 4,
                    clock: Callable[[], int] = now_ms, batch_size: int = BATCH) -> dict[str, int]:
    """One pass. `retention_days` 0 keeps tasks forever. Returns what was deleted.

    At most `batches` transactions of `batch_size` tasks each, then as many of old deliveries of
    tasks that stay; the next pass (the reconciler's, every 30 s) takes the rest. Images go through
    the store (local folder or S3 bucket). A store that fails (a bucket that is down) leaves those
    files behind and is logged; the rows are gone either way.
    """
    now = clock()
    done = {"tasks": 0, "deliveries": 0, "idempotency_keys": 0, "images": 0, "uploads": 0}
    with session_factory() as session:
        result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - KEEP_MS))
        done["idempotency_keys"] = int(getattr(result, "rowcount", 0) or 0)
        session.commit()
    if retention_days <= 0:
        return done
    cutoff = now - retention_days * DAY_MS
    owed = exists().where(WebhookDelivery.task_id == Task.id, WebhookDelivery.status.in_(OPEN_DELIVERIES))
    for _ in range(batches):
        with session_factory() as session:
            ids = list(session.scalars(
                select(Task.id).where(Task.status.in_(protocol.TERMINAL_STATUSES), Task.submit_time < cutoff, ~owed)
                .order_by(Task.id).limit(batch_size)
            ))
            if not ids:
                break
            done["deliveries"] += _delete_deliveries(
                session, select(WebhookDelivery.id).where(WebhookDelivery.task_id.in_(ids)))
            session.execute(delete(Task).where(Task.id.in_(ids)))
            session.commit()
        for task_id in ids:  # images after the rows: a crash leaves files, never rows pointing at nothing
            try:
                done["images"] += images.delete_task(task_id)
            except Exception as exc:  # noqa: BLE001 - botocore and OS errors alike: the next tasks still go
                log.warning("retention: images of task %s not deleted: %s", task_id, exc)
        done["tasks"] += len(ids)
    # Tasks older than the cutoff that stay because they are still open: their settled history goes.
    kept = select(Task.id).where(Task.status.in_(UNFINISHED), Task.submit_time < cutoff)
    for _ in range(batches):
        with session_factory() as session:
            deleted = _delete_deliveries(session, select(WebhookDelivery.id).where(
                WebhookDelivery.task_id.in_(kept), WebhookDelivery.status.not_in(OPEN_DELIVERIES),
                WebhookDelivery.updated_at < cutoff).order_by(WebhookDelivery.id).limit(batch_size))
            session.commit()
        done["deliveries"] += deleted
        if deleted < batch_size:
            break
    # Uploads belong to no task: a day's folder goes once the whole day is past the cutoff. The cutoff's day
    # moves once a day, so each process lists the folders once per day and store, not at every pass.
    day = upload_day(cutoff)
    if _uploads_cleared.get(images) != day:
        try:
            done["uploads"] = images.delete_uploads_before(day)
            _uploads_cleared[images] = day
        except Exception as exc:  # noqa: BLE001 - as for the tasks' images: the next pass tries again
            log.warning("retention: uploads before %s not deleted: %s", day, exc)
    if any(done.values()):
        log.info("retention: deleted %s", done)
    return done


def _delete_deliveries(session: Session, which: Select[int]) -> int:
    """Delete the deliveries `which` selects, with their attempt log; returns how many (not committed)."""
    ids = list(session.scalars(which))
    if ids:
        session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return len(ids)
