"""`/task/{id}/deliveries`: the webhook deliveries of a task, and redelivering one."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from app import protocol, schemas
from app.api import services
from app.api.responses import json_response
from app.api.tasks import visible_task
from app.db import db
from app.errors import TaskNotFound, ValidationFailed
from app.models import WebhookAttempt, WebhookDelivery
from workers.webhook_outbox import DeliveryNotFound, RedeliveryRefused, deliveries_of, redeliver
from workers.webhooks import celery_enqueuer

bp = Blueprint("webhooks", __name__, url_prefix="/task")


def delivery_json(row: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    """A delivery as the API shows it (times in epoch ms; the body is the task JSON of `seq`)."""
    return {
        "id": str(row.id), "taskId": str(row.task_id), "seq": row.seq, "webhookId": row.event_id, "url": row.url,
        "taskStatus": row.task_status, "progress": row.progress, "status": row.status, "attempts": row.attempts,
        "nextAttemptAt": row.next_attempt_at, "lastStatusCode": row.last_status_code, "lastError": row.last_error,
        "deliveredAt": row.delivered_at, "createdAt": row.created_at, "updatedAt": row.updated_at,
        "attemptLog": [{"attempt": a.number, "startedAt": a.started_at, "finishedAt": a.finished_at,
                        "statusCode": a.status_code, "error": a.error} for a in attempts],
    }


@bp.get("/<task_id>/deliveries")
def deliveries(task_id: str) -> Response:
    """Every webhook delivery of the task, oldest event first, with its attempts."""
    found = deliveries_of(db.session(), visible_task(task_id).id)
    return json_response([delivery_json(row, attempts) for row, attempts in found])


@bp.post("/<task_id>/deliveries/<delivery_id>/redeliver")
def redeliver_one(task_id: str, delivery_id: str) -> Response:
    """Attempt the delivery again now, with the same webhook-id.

    The task is looked up first, so a wrong delivery id of another key's task reads as an unknown task.
    """
    parsed_task = visible_task(task_id).id
    parsed_delivery = schemas.parse_task_id(delivery_id)
    if parsed_delivery is None:
        raise TaskNotFound(f"delivery {delivery_id} of task {task_id} not found")
    enqueue = celery_enqueuer(services().dispatcher.celery)
    try:
        row = redeliver(db.session(), parsed_task, parsed_delivery, enqueue)
    except DeliveryNotFound as exc:
        raise TaskNotFound(str(exc)) from None
    except RedeliveryRefused as exc:
        raise ValidationFailed(str(exc)) from None
    attempts = next((a for r, a in deliveries_of(db.session(), parsed_task) if r.id == row.id), [])
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, "Redelivery scheduled",
                                           delivery_json(row, attempts)))
