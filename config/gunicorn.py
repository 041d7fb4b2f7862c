"""gunicorn settings for the web process (`gunicorn -c python:config.gunicorn 'app:create_app()'`)."""
from __future__ import annotations

import gc
from typing import Any

from config import Settings

_settings = Settings.from_env()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_workers
threads = _settings.web_threads
worker_class = "gthread"
keepalive = 5
timeout = 30
graceful_timeout = 20
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()


def post_worker_init(worker: Any) -> None:
    """Move everything loaded at start (Flask, SQLAlchemy, the app) out of the collector's reach.

    A full collection otherwise walks those ~125k objects and stalls a request for ~40 ms
    (bench P5: list-by-condition max 45 ms → 21 ms, p99 20 → 16-18 ms with this hook).
    """
    gc.collect()
    gc.freeze()
