"""The per-process composition root of a worker: settings, database, Redis, images, drivers.

Built on first use (after Celery forks its pool) and reused by every task in the process;
tests install their own with `set_runtime`.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.crypto import SecretBox
from app.db import make_engine, make_session_factory
from app.images import ImageStore, make_image_store
from app.models import Account, Task
from app.services.account_admin import account_secrets
from app.services.plans import prices_from_json
from config import Settings
from workers.billing import BillingWriter
from workers.dispatch import Dispatcher
from workers.drivers.base import Driver
from workers.drivers.discord import build_discord_driver
from workers.drivers.mjproxy import MjproxyDriver
from workers.drivers.simulator import SimulatorDriver
from workers.scheduler import MAX_BLOCK_SECONDS, LeaseKeeper, Scheduler
from workers.webhook_http import Transport
from workers.webhook_outbox import WebhookOutbox
from workers.webhook_signing import SecretSource
from workers.webhooks import Deliverer, celery_enqueuer

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    session_factory: sessionmaker
    redis: Redis | None
    images: ImageStore
    drivers: dict[str, Driver]
    dispatcher: Dispatcher | None = None
    #: Written to inside task transitions (pass it to TaskEvents' listeners).
    webhook_outbox: WebhookOutbox | None = None
    #: Makes webhook attempts and sweeps (the mj.webhook.* tasks).
    deliverer: Deliverer | None = None
    #: Account slots (FIFO, leases, fencing) and the thread that renews this process's leases.
    scheduler: Scheduler | None = None
    keeper: LeaseKeeper | None = None
    #: Charges a key once, inside the SUCCESS transition.
    billing: BillingWriter | None = None
    #: Decrypts account secrets for the drivers.
    secret_box: SecretBox | None = None

    def account_secrets(self, account: Account) -> dict[str, str]:
        assert self.secret_box is not None
        return account_secrets(account, self.secret_box)


#: Seconds a worker thread waits for one of its process's pooled PostgreSQL connections (app/db.py).
#: Hundreds of threads starting jobs at once queue for 40 connections; 3 s (the API's) timed out (bench P4).
WORKER_POOL_TIMEOUT_SECONDS = 30.0

_runtime: Runtime | None = None
_lock = threading.Lock()


def build_runtime(settings: Settings, celery: Any = None) -> Runtime:
    """Connect everything `settings` names (connections are lazy: nothing is opened yet)."""
    engine = make_engine(settings.effective_database_url, pool_size=min(settings.worker_concurrency, 20),
                         pool_timeout=WORKER_POOL_TIMEOUT_SECONDS)
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=25)
    images = make_image_store(settings)
    # The simulated upstream's own memory (submission counts, fencing) may live apart from mjq's Redis.
    sim_redis = Redis.from_url(settings.sim_state_url, socket_timeout=5) if settings.sim_state_url else redis
    drivers: dict[str, Driver] = {"simulator": SimulatorDriver(images, settings.sim_job_seconds, sim_redis,
                                                                progress_steps=settings.sim_progress_steps)}
    session_factory = make_session_factory(engine)
    drivers["mjproxy"] = MjproxyDriver.from_settings(settings, images, session_factory, redis)
    enqueue = celery_enqueuer(celery) if celery is not None else None
    outbox = WebhookOutbox(settings.webhook_progress_interval_seconds, settings.webhook_schedule[0], enqueue,
                           images=images, image_proxy_url=settings.image_proxy_url)
    box = SecretBox.from_settings(settings)
    deliverer = Deliverer(session_factory, Transport(settings.webhook_allow_private),
                          SecretSource(session_factory, settings.webhook_secret, box), settings.webhook_schedule,
                          settings.webhook_timeout_seconds, enqueue, worker=worker_name())
    # Waiting for a slot blocks on BLPOP for up to MAX_BLOCK_SECONDS: this client's timeout must be longer.
    slots_redis = Redis.from_url(settings.redis_url, socket_timeout=MAX_BLOCK_SECONDS + 5, socket_connect_timeout=3,
                                 health_check_interval=25)
    scheduler = Scheduler(slots_redis, settings.slot_lease_seconds, settings.account_choose_rule,
                          running_jobs=lambda: count_running_jobs(session_factory))
    drivers["discord"] = build_discord_driver(settings, images, session_factory, redis, scheduler,
                                              Dispatcher(celery) if celery is not None else None, [outbox])
    return Runtime(settings, session_factory, redis, images, drivers,
                   Dispatcher(celery) if celery is not None else None, outbox, deliverer, scheduler,
                   LeaseKeeper(scheduler), BillingWriter(prices_from_json(settings.prices_json)), box)


def count_running_jobs(session_factory: sessionmaker) -> int:
    """Jobs running upstream right now, by the database (the scheduler's check after Redis lost its data)."""
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Task).where(
            Task.status.in_((protocol.SUBMITTED, protocol.IN_PROGRESS)))) or 0)


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            from workers.celery_app import app

            _runtime = build_runtime(app.conf.mjq_settings, app)
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _lock:
        _runtime = runtime


def worker_name(hostname: str | None = None) -> str:
    """`<celery node name>/<pid>`: which worker process ran a job, for rows and logs."""
    return f"{hostname or socket.gethostname()}/{os.getpid()}"


def warm_up(runtime: Runtime) -> None:
    """Open what the first job would otherwise open on its own time: a database connection, both
    Redis clients, and the drivers' lazy imports (Pillow's codecs).

    A service that is down is only logged: the worker still starts, and each job reports its
    own failure as it would without the warm-up.
    """
    from sqlalchemy import text

    try:
        with runtime.session_factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error: the jobs will report it
        log.warning("warm-up: database not reachable yet: %s", exc)
    for client in (runtime.redis, runtime.scheduler.redis if runtime.scheduler else None):
        if client is None:
            continue
        try:
            client.ping()
        except RedisError as exc:
            log.warning("warm-up: Redis not reachable yet: %s", exc)
    from PIL import Image

    Image.init()  # registers every codec plugin now, not inside the first job's save()


def warm_up_on_ready(sender: Any = None, **_: Any) -> None:
    """Celery's worker_ready: build and warm this process's runtime when it runs the jobs itself.

    Under the threads or solo pool the worker process is the one that runs the tasks; a prefork
    parent must not open connections its children would inherit.
    """
    pool = type(getattr(sender, "pool", None)).__module__
    if not pool.endswith(("thread", "threads", "solo")):
        return
    warm_up(get_runtime())
