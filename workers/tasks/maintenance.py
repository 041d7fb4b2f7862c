"""`mj.reconcile`: the periodic pass that makes PostgreSQL, not Redis, the promise.

It re-enqueues rows whose messages were lost (workers/reconciler.py), fails jobs that
stopped moving or waited too long and frees their slots (workers/sweeper.py), and deletes
what is past retention (workers/retention.py).
"""
from __future__ import annotations

from celery import shared_task

from workers.events import Listener
from workers.reconciler import reconcile
from workers.retention import apply_retention
from workers.runtime import get_runtime
from workers.sweeper import sweep


# Periodic and idempotent: acked on receipt, so Redis dying mid-run leaves nothing unacked (a lost
# run is the next tick's), and no redelivered copy runs beside the next one.
@shared_task(name="mj.reconcile", acks_late=False)
def reconcile_task() -> dict[str, int]:
    runtime = get_runtime()
    assert runtime.redis is not None and runtime.dispatcher is not None
    done = reconcile(runtime.session_factory, runtime.redis, runtime.dispatcher,
                     idle_ms=int(runtime.settings.requeue_after_seconds * 1000),
                     dead_after_ms=int(runtime.settings.slot_lease_seconds * 1000))
    writers: list[Listener] = [w for w in (runtime.webhook_outbox, runtime.billing) if w is not None]
    done.update(sweep(runtime.session_factory, runtime.scheduler, writers, runtime.settings.max_queue_seconds))
    done.update(apply_retention(runtime.session_factory, runtime.images,
                                runtime.settings.retention_days))
    return done
