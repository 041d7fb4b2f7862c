"""`mj.execute`: run one job. The arguments are (task id, action) so Flower shows which job it is."""
from __future__ import annotations

import logging

from celery import Task as CeleryTask
from celery import shared_task

from workers.executor import DATABASE_UNAVAILABLE, Executor
from workers.logs import log_context
from workers.runtime import get_runtime, worker_name

log = logging.getLogger(__name__)

#: Seconds before a job whose database write failed is tried again.
DB_RETRY_SECONDS = 5


@shared_task(name="mj.execute", bind=True, max_retries=None)
def execute(self: CeleryTask, task_id: str, action: str = "") -> str:
    with log_context(task_id=task_id):  # every log line of the job names it (workers/logs.py)
        return _execute(self, task_id, action)


def _execute(self: CeleryTask, task_id: str, action: str) -> str:
    runtime = get_runtime()
    queue = (self.request.delivery_info or {}).get("routing_key", "?")
    executor = Executor(
        runtime.session_factory, runtime.redis, runtime.drivers, worker_name(self.request.hostname),
        listeners=[writer for writer in (runtime.webhook_outbox, runtime.billing) if writer is not None],
        scheduler=runtime.scheduler, keeper=runtime.keeper, max_wait_seconds=runtime.settings.max_wait_seconds,
        secrets=runtime.account_secrets, images=runtime.images,
        thumbnail_pixels=runtime.settings.thumbnail_pixels,
    )
    try:
        outcome = executor.execute(int(task_id))
    except DATABASE_UNAVAILABLE as exc:
        log.warning("task %s %s: database unavailable, retrying in %ss: %s", task_id, action, DB_RETRY_SECONDS, exc)
        raise self.retry(exc=exc, countdown=DB_RETRY_SECONDS) from exc
    log.info("task %s %s ran on queue %s by %s: %s", task_id, action, queue, self.request.hostname, outcome)
    return outcome
