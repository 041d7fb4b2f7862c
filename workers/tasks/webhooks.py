"""`mj.webhook.deliver` and `mj.webhook.sweep`: webhook delivery, on the mj.webhooks queue only.

Thin shells over workers/webhooks.py `Deliverer`: the database row is the schedule, so a
message carries only a delivery id and a lost message costs one sweep period.
"""
from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy import select

from app.models import WebhookDelivery
from workers.logs import log_context
from workers.runtime import get_runtime
from workers.webhooks import DELIVER, SWEEP, Deliverer

log = logging.getLogger(__name__)


@shared_task(name=DELIVER)
def deliver(delivery_id: str) -> str:
    deliverer = get_runtime().deliverer
    assert deliverer is not None
    with log_context(delivery_id=delivery_id, task_id=_task_of(deliverer, int(delivery_id))):
        return deliverer.attempt(int(delivery_id))


def _task_of(deliverer: Deliverer, delivery_id: int) -> int | None:
    """The task a delivery announces, for the log lines of its attempt (one primary-key read)."""
    with deliverer.session_factory() as session:
        return session.scalar(select(WebhookDelivery.task_id).where(WebhookDelivery.id == delivery_id))


# Periodic and idempotent: acked on receipt, so Redis dying mid-run leaves nothing unacked (a lost
# run is the next tick's), and no redelivered copy runs beside the next one.
@shared_task(name=SWEEP, acks_late=False)
def sweep() -> int:
    deliverer = get_runtime().deliverer
    assert deliverer is not None
    return len(deliverer.sweep())
