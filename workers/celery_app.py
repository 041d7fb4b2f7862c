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
- the periodic passes (mj.reconcile, mj.webhook.sweep) ack early: a lost run is the next tick's.
- a kombu channel whose broker connection broke refuses further calls with a connection error
  (guard_kombu_closed_channel below) instead of killing the worker.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.beat import PersistentScheduler
from celery.worker.consumer import Consumer
from kombu import Exchange, Queue

from config import Settings
from workers import queues

TASK_MODULES = ("workers.tasks.execute", "workers.tasks.maintenance", "workers.tasks.webhooks")

log = logging.getLogger(__name__)


def guard_kombu_closed_channel() -> None:
    """Keep a worker alive when it touches a channel whose broker connection Redis broke.

    After Celery closes a broken connection (the transport's `client` becomes None, or the channel loses its
    transport), two calls still reach the old channel and build a new Redis pool from it: the close's
    restore of unacknowledged messages, and the late ack of a job that finishes after the reconnect (the
    threads pool keeps running jobs). kombu 5.7 raises AttributeError there ('NoneType' object has no
    attribute 'hostname' / 'client', the celery/kombu#582 family), which Celery treats as unrecoverable:
    the worker exits. The fault suite hit both (the beat in T1.5, a worker in T1.4). This raises the
    Redis ConnectionError kombu expects instead, which Celery ignores on close and logs on ack. Nothing is
    lost: those messages are still in Redis' unacked hash, restored after the visibility timeout (a
    finished job's copy is then dropped: its row is terminal), and when Redis lost them the reconciler
    sends them again from PostgreSQL. Patched by hand because no kombu release fixes it.
    """
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    original = kombu_redis.Channel._connparams
    if getattr(original, "mjq_guarded", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if getattr(getattr(self, "connection", None), "client", None) is None:
            log.warning("a kombu channel outlived its broker connection; its call is refused, Redis keeps "
                        "its messages for the visibility timeout and the reconciler")
            raise RedisConnectionError("the channel's broker connection is closed")
        return original(self, asynchronous)

    _connparams.mjq_guarded = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]


guard_kombu_closed_channel()


def share_kombu_clients() -> None:
    """One Redis client per kombu channel for the commands it runs beside its BRPOP connection.

    kombu 5.7's redis Channel builds a new `redis.Redis` object for every publish, task-event fanout,
    delivery (the unacked hash) and ack (`conn_or_acquire`), and redis-py 6 spends ~140 µs building one
    (its table of ~200 response callbacks): two per submit in the API, two or more per job on a worker's
    consumer thread, which is the thread a worker's intake waits on (bench P1, P3). A client takes a
    connection from the channel's pool per command, so one shared by threads is safe. It is made again
    when the channel's pool changes (kombu drops the pool when the connection breaks), so a channel that
    outlived its connection still fails as `guard_kombu_closed_channel` makes it. Patched by hand because
    kombu has no setting for it.
    """
    from contextlib import contextmanager

    from kombu.transport import redis as kombu_redis

    if getattr(kombu_redis.Channel.conn_or_acquire, "mjq_shared", False):
        return

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Any:
        if client:
            yield client
            return
        shared = self.__dict__.get("_mjq_client")
        if shared is None or shared.connection_pool is not getattr(self, "_pool", None):
            shared = self._mjq_client = self._create_client()  # a closed channel raises here (the guard above)
        yield shared

    conn_or_acquire.mjq_shared = True  # type: ignore[attr-defined]
    kombu_redis.Channel.conn_or_acquire = conn_or_acquire  # type: ignore[method-assign]


share_kombu_clients()


def skip_cached_declarations() -> None:
    """Let a producer skip an entity its connection has declared before, without binding a copy of it.

    Every publish asks kombu to declare its entities (the job's queue, the `celeryev` exchange of the
    task-sent event), and kombu 5.7's retrying path binds a fresh copy of each to the channel (`copy`,
    `as_dict`, a new entity) before it looks in the connection's cache of declared entities: ~19 % of the
    CPU of a submit's Celery publish (bench P1). This looks in the same cache first, by the same key
    (`hash(entity)`), and answers as kombu's cached path does (False: nothing declared). An entity not in
    the cache, or a producer whose channel has no live connection, goes the original way, so declaring
    and reconnecting are unchanged. Patched by hand because kombu has no setting for it.
    """
    from kombu import messaging

    original = messaging.Producer.maybe_declare
    if getattr(original, "mjq_cached", False):
        return

    def maybe_declare(self: Any, entity: Any, retry: bool = False, **retry_policy: Any) -> Any:
        if entity and entity.can_cache_declaration:
            client = getattr(getattr(self.__dict__.get("_channel"), "connection", None), "client", None)
            if client is not None and hash(entity) in client.declared_entities:
                return False
        return original(self, entity, retry, **retry_policy)

    maybe_declare.mjq_cached = True  # type: ignore[attr-defined]
    messaging.Producer.maybe_declare = maybe_declare  # type: ignore[method-assign]


skip_cached_declarations()

#: How a worker's consumer retries the broker: first after 0.2 s, then 0.5 s more each time, at most 2 s
#: apart (kombu's default is 2 s, +2 s, up to 30 s: after an outage of a minute a worker would consume
#: again up to 30 s after Redis answered, and the reconciler, which runs in the beat's worker, too).
RECONNECT_INTERVALS = {"interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


#: How long task events (for Flower) gather in the worker before one publish sends them all, seconds.
EVENT_FLUSH_SECONDS = 0.1


class QuickReconnectConsumer(Consumer):
    """Celery's consumer, reconnecting sooner after the broker connection breaks, and publishing task events
    in batches.

    - RECONNECT_INTERVALS (Celery passes kombu's defaults and has no setting for them).
    - When the connection breaks, only the messages no thread has started are pushed back onto their
      queues (Celery forgets those reserved requests, so they must go back). kombu pushed every message the
      process held, one round trip each, before it reconnected: 38 s for 200 jobs in the fault suite while
      the consumer shared the GIL with 200 busy threads, and the running jobs' copies were only dropped as
      duplicates. A running job's message stays in Redis' unacked hash: restored after the visibility
      timeout if never acknowledged (its row is terminal by then: dropped), and a job whose execution
      stopped is sent again sooner by the reconciler (its heartbeat ended).
    - Task events (received, started, succeeded: what Flower shows) are published together every
      EVENT_FLUSH_SECONDS. Celery woke the consumer's loop for each event a job thread sent and published
      it on the next tick: with jobs running, that thread receives every message, and each of its Redis
      round trips waits to take the GIL back behind the job threads, so the flushes cut into how fast it
      takes new messages (bench P3: 28-50 received a second, a third of the thread's time in the flush).
    """

    _event_flush_due = False

    def on_send_event_buffered(self) -> None:
        # Any thread. One flush is scheduled per window; a race between two senders costs one more flush.
        if self.hub is not None and not self._event_flush_due:
            self._event_flush_due = True
            self.hub.call_soon(self._schedule_event_flush)

    def _schedule_event_flush(self) -> None:
        # The loop's thread: its timer is not thread-safe.
        self.hub.call_later(EVENT_FLUSH_SECONDS, self._flush_due_events)

    def _flush_due_events(self) -> None:
        self._event_flush_due = False  # first: an event sent during the flush schedules the next one
        self._flush_events()

    def ensure_connected(self, conn: Any) -> Any:
        ensure = conn.ensure_connection

        def ensure_connection(*args: Any, **kwargs: Any) -> Any:
            return ensure(*args, **{**RECONNECT_INTERVALS, **kwargs})

        conn.ensure_connection = ensure_connection
        return super().ensure_connected(conn)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        from celery.worker.state import active_requests

        # A flush scheduled on the broken connection's loop may never run: the next event schedules anew.
        self._event_flush_due = False

        running = {getattr(r.message, "delivery_tag", None) for r in list(active_requests)}
        transport = getattr(self.connection, "transport", None) if self.connection is not None else None
        for channel in list(getattr(transport, "channels", None) or []):
            delivered = getattr(getattr(channel, "_qos", None), "_delivered", None)
            for tag in running & set(delivered or ()):
                delivered.pop(tag, None)  # type: ignore[union-attr]
        super().on_connection_error_after_connected(exc)


class QuickReconnectScheduler(PersistentScheduler):
    """Celery beat's scheduler, reconnecting its publisher on RECONNECT_INTERVALS like the consumers.

    Beat retried its broker connection on kombu's defaults (2 s, +2 s, up to 30 s) on its own, apart from the
    worker it is embedded in: after a Redis outage its next reconcile went out up to that long after Redis
    answered again (4.6 s in a T1.5 run whose sweep period is 3 s, against a bound of one sweep).
    """

    def _ensure_connected(self) -> Any:
        def _error_handler(exc: Exception, interval: float) -> None:
            log.error("beat: Connection error: %s. Trying again in %s seconds...", exc, interval)

        return self.connection.ensure_connection(_error_handler, self.app.conf.broker_connection_max_retries,
                                                 **RECONNECT_INTERVALS)


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
        worker_consumer="workers.celery_app:QuickReconnectConsumer",
        beat_scheduler="workers.celery_app:QuickReconnectScheduler",
        # Celery cannot cancel a thread: on, it logs a traceback per running job before reconnecting
        # (8 s with 200 jobs in the fault suite) and the jobs go on all the same.
        worker_cancel_long_running_tasks_on_connection_loss=False,
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
