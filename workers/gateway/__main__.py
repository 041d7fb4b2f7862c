"""`python -m workers.gateway`: build the process's connections from the environment and run the supervisor."""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from config import Settings
from workers.celery_app import make_celery
from workers.drivers.discord_accounts import AccountRetirer
from workers.events import Listener
from workers.gateway.supervisor import Gateway
from workers.runtime import build_runtime, worker_name


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime = build_runtime(settings, make_celery(settings))
    listeners: list[Listener] = [w for w in (runtime.webhook_outbox, runtime.billing) if w is not None]
    retirer = AccountRetirer(runtime.session_factory, runtime.redis, runtime.scheduler, runtime.dispatcher,
                             listeners, settings.discord_credits_exhausted)
    assert runtime.redis is not None
    gateway = Gateway(runtime.session_factory, runtime.redis, runtime.account_secrets, retirer,
                      holder=worker_name(), gateway_url=settings.discord_gateway_url,
                      lease_ms=int(settings.gateway_lease_seconds * 1000),
                      poll_seconds=min(2.0, settings.gateway_lease_seconds / 3))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gateway.run(stop)


if __name__ == "__main__":
    main()
