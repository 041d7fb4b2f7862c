"""The one Celery app, built from config. `celery -A workers.celery_app ...` runs it.

Settings (the reasons, and what each does under the threads pool the Procfile runs, are in
docs/architecture.md, "Delivery guarantees"):
- late acks + reject on worker lost: a crashed worker's job is redelivered, not dropped;
  the executor's claim counter caps a job that keeps killing its worker (poison).
- prefetch 1: a worker reserves only what it can run; waiting jobs stay in the queue for others.
- soft < hard time limit < visibility timeout (checked at start): under prefork a job is
  stopped before Redis would redeliver it; under threads the limits do not apply and a
  redelivered copy of a running job is dropped by the executor's heartbeat check.
- results are not stored: PostgreSQL holds every outcome.
"""
from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from config import Settings
from workers import queues

TASK_MODULES = ("workers.tasks.execute", "workers.tasks.maintenance", "workers.tasks.webhooks")


def make_celery(settings: Settings, broker_url: str | None = None) -> Celery:
    """A Celery app for `settings`; `broker_url` overrides REDIS_URL (tests pass `memory://`)."""
    app = Celery("mjq", include=list(TASK_MODULES))
    vt = settings.visibility_timeout_seconds
    app.conf.update(
        broker_url=broker_url or settings.redis_url,
        broker_transport_options={
            "visibility_timeout": vt,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
            "health_check_interval": 25,
            # Sweep for unacknowledged messages past the visibility timeout every 10 s (kombu's default is
            # about every 100 s); the reconciler usually resends a dead worker's jobs sooner anyway.
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        },
        visibility_timeout=vt,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=4,
        broker_heartbeat=0,
        # Publishing from the API must not hang when Redis is down: the row is committed, the
        # reconciler sends the message later.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2,
                                   "interval_max": 0.3},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=30.0,
        worker_enable_soft_shutdown_on_idle=False,
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queues.MAINTENANCE,
        # Each queue has its own direct exchange and routing key, so a message reaches exactly one queue.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in queues.ALL],
        task_default_exchange=queues.MAINTENANCE,
        task_default_routing_key=queues.MAINTENANCE,
        task_routes={
            "mj.webhook.*": {"queue": queues.WEBHOOKS},
            "mj.reconcile": {"queue": queues.MAINTENANCE},
        },
        # Flower and `celery events` see every task with its name and arguments.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        beat_schedule={
            "reconcile": {"task": "mj.reconcile", "schedule": settings.reconcile_interval_seconds,
                          "options": {"queue": queues.MAINTENANCE, "expires": settings.reconcile_interval_seconds}},
            # Due and abandoned webhook deliveries; runs on mj.webhooks, beside the deliveries themselves.
            "webhook-sweep": {"task": "mj.webhook.sweep", "schedule": settings.webhook_sweep_interval_seconds,
                              "options": {"queue": queues.WEBHOOKS,
                                          "expires": settings.webhook_sweep_interval_seconds}},
        },
        timezone="UTC",
    )
    app.conf.mjq_settings = settings
    return app


def _default_app() -> Celery:
    from workers.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format, role="worker")
    return make_celery(settings)


app = _default_app()


@signals.worker_ready.connect
def _warm_up(sender: Any = None, **_: Any) -> None:
    """The first job should not pay for opening connections and loading codecs (workers/runtime.py)."""
    from workers.runtime import warm_up_on_ready

    warm_up_on_ready(sender)
