"""P3's baseline task: a Celery task that does nothing, run by the same worker command as mjq's jobs
(`celery -A workers.celery_app worker --include bench.noop_task`), so it shares every broker
and worker setting of `workers/celery_app.py`."""
from __future__ import annotations

from celery import shared_task

NOOP = "bench.noop"


@shared_task(name=NOOP)
def noop() -> None:
    return None
