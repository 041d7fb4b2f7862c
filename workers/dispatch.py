"""Sending job messages. The API and the reconciler both enqueue through this one class."""
from __future__ import annotations

import logging

from celery import Celery

log = logging.getLogger(__name__)

EXECUTE = "mj.execute"


class Dispatcher:
    """Publishes `mj.execute` messages on a Celery app's broker."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def execute(self, task_id: int, action: str, queue: str) -> bool:
        """Enqueue one execution of task `task_id` on `queue`; False when the broker is unreachable.

        The Celery task id is the mjq task id, so an admin finds the job in Flower by its id.
        """
        try:
            self.celery.send_task(EXECUTE, args=[str(task_id), action], queue=queue, routing_key=queue,
                                  task_id=str(task_id))
            return True
        except Exception as exc:  # noqa: BLE001 - any broker failure means "not sent"; the reconciler retries
            log.warning("enqueue of task %s on %s failed: %s", task_id, queue, exc)
            return False
