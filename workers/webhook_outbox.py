"""The webhook outbox: a delivery row per announced event, written in the transition's transaction.

`WebhookOutbox` is a TaskEvents listener (workers/events.py `OutboxWriter`): the row commits
with the task change or not at all, so no crash between the commit and an enqueue can lose
an event. After the commit it sends the row's deliver message at once (the fast path); the
sweep (workers/webhooks.py) covers a message that never arrives.

Coalescing: a progress event (IN_PROGRESS after IN_PROGRESS) is due no sooner than
`progress_interval` after the task's previous event was due, and while an earlier progress
event has not been attempted yet it is replaced by the newer one (same row, new seq and
webhook-id), so a receiver gets at most one progress POST per interval and always the latest
numbers. SUBMITTED, the start of IN_PROGRESS and terminal events are never coalesced.

The body is the task JSON in the image mode the task was submitted with (`tasks.image_mode`,
app/image_modes.py; relay when none was recorded), so it matches what `fetch` returns on that mount.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import protocol
from app.image_modes import RELAY, present
from app.images import ImageStore
from app.models import Task, WebhookAttempt, WebhookDelivery, WebhookDisabledEndpoint, now_ms
from config.errors import MjqError
from workers.webhooks import (
    DELIVERING,
    DISABLED,
    PENDING,
    QUEUED_HOLD_MS,
    SUPERSEDED,
    Enqueue,
    endpoint_key,
    event_id,
    newer_delivered,
)

log = logging.getLogger(__name__)


class DeliveryNotFound(MjqError):
    """Raised when a delivery id does not exist or belongs to another task."""


class RedeliveryRefused(MjqError):
    """Raised when a delivery cannot be re-armed now; the message says why."""


class WebhookOutbox:
    """Writes delivery rows inside task transitions. One per process; holds no per-task state."""

    def __init__(self, progress_interval_seconds: float = 2.0, first_delay_seconds: float = 0.0,
                 enqueue: Enqueue | None = None, clock: Callable[[], int] = now_ms,
                 images: ImageStore | None = None, image_proxy_url: str = "") -> None:
        """`images` and `image_proxy_url` (MJQ_IMAGE_PROXY_URL) render proxy-mode bodies; without them
        those stay relay (origin needs neither)."""
        self.progress_interval_ms = int(progress_interval_seconds * 1000)
        self.first_delay_ms = int(first_delay_seconds * 1000)
        self.enqueue = enqueue
        self.clock = clock
        self.images = images
        self.image_proxy_url = image_proxy_url

    def write_in_transaction(self, session: Session, task: Task, data: dict[str, Any], seq: int
                             ) -> Callable[[], object] | None:
        """Add the delivery of event `seq` (task JSON `data`) when the task has a hook."""
        url = task.notify_hook or (data.get("properties") or {}).get("notifyHook")
        if not url:
            return None
        now = self.clock()
        endpoint = endpoint_key(url)
        # The body a client of the task's mount would fetch: the image mode it was submitted with.
        body = protocol.dumps(present(data, task.image_mode or RELAY, self.images, self.image_proxy_url))
        due = now + self.first_delay_ms
        latest = session.scalars(select(WebhookDelivery).where(
            WebhookDelivery.task_id == task.id, WebhookDelivery.endpoint == endpoint,
        ).order_by(WebhookDelivery.seq.desc()).limit(1)).first()
        is_progress = (data["status"] == protocol.IN_PROGRESS and latest is not None
                       and latest.task_status == protocol.IN_PROGRESS)
        if is_progress and self.progress_interval_ms > 0 and latest is not None:
            if latest.status == PENDING and latest.attempts == 0:
                replaced: Any = session.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == latest.id, WebhookDelivery.status == PENDING,
                    WebhookDelivery.attempts == 0,
                ).values(seq=seq, event_id=event_id(task.id, seq), body=body, progress=data.get("progress"),
                         updated_at=now))
                if replaced.rowcount == 1:
                    return None  # the row's own message carries the newer event when it is due
            due = max(due, latest.due_at + self.progress_interval_ms)
        elif latest is not None:
            # A status change makes a progress event still waiting for its slot pointless: it goes first.
            session.execute(update(WebhookDelivery).where(
                WebhookDelivery.task_id == task.id, WebhookDelivery.endpoint == endpoint,
                WebhookDelivery.status == PENDING, WebhookDelivery.attempts == 0, WebhookDelivery.next_attempt_at > now,
            ).values(status=SUPERSEDED, next_attempt_at=None, locked_until=0, updated_at=now))
        disabled = session.get(WebhookDisabledEndpoint, endpoint) is not None
        fast = self.enqueue is not None and not disabled
        row = WebhookDelivery(
            task_id=task.id, seq=seq, event_id=event_id(task.id, seq), url=url, endpoint=endpoint, owner=task.owner,
            body=body, task_status=data["status"], progress=data.get("progress"),
            status=DISABLED if disabled else PENDING, attempts=0, due_at=due,
            next_attempt_at=None if disabled else due, locked_until=due + QUEUED_HOLD_MS if fast else 0,
            created_at=now, updated_at=now,
        )
        session.add(row)
        session.flush()
        if not fast or self.enqueue is None:
            return None
        return partial(self.enqueue, row.id, (due - now) / 1000)


def deliveries_of(session: Session, task_id: int) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """Every delivery of a task, oldest event first, each with its attempts in order."""
    rows = list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.task_id == task_id)
                                .order_by(WebhookDelivery.seq, WebhookDelivery.id)))
    attempts: dict[int, list[WebhookAttempt]] = {row.id: [] for row in rows}
    if rows:
        for attempt in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                                       .order_by(WebhookAttempt.id)):
            attempts[attempt.delivery_id].append(attempt)
    return [(row, attempts[row.id]) for row in rows]


def redeliver(session: Session, task_id: int, delivery_id: int, enqueue: Enqueue | None,
              clock: Callable[[], int] = now_ms) -> WebhookDelivery:
    """Re-arm a delivery for an attempt now, with the same webhook-id; re-enables a disabled URL.

    Raises:
        DeliveryNotFound: no such delivery for this task.
        RedeliveryRefused: an attempt is in flight, or a later event already reached the URL.
    """
    now = clock()
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or row.task_id != task_id:
        raise DeliveryNotFound(f"delivery {delivery_id} of task {task_id} not found")
    if row.status == DELIVERING and row.locked_until > now:
        raise RedeliveryRefused(f"delivery {delivery_id} has an attempt in flight; try again when it ends")
    if newer_delivered(session, row):
        raise RedeliveryRefused(f"a later event of task {task_id} already reached {row.url}; "
                                "redeliver that one (an older one would roll the receiver back)")
    disabled = session.get(WebhookDisabledEndpoint, row.endpoint)
    if disabled is not None:
        log.info("webhook endpoint %s re-enabled by a redelivery of %s", row.url, row.event_id)
        session.delete(disabled)
    row.status = PENDING
    row.next_attempt_at = now
    row.locked_until = now + QUEUED_HOLD_MS if enqueue is not None else 0
    row.updated_at = now
    session.commit()
    if enqueue is not None:
        enqueue(row.id, 0)
    return row
