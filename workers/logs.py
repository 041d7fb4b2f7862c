"""Logging for every process: one line per record, text for people or JSON for log pipelines.

Every record carries the process role (web, worker-fast, worker-webhooks...) and, when known,
the task id and the request id. Those two come from context variables: the web app sets the
request id for the span of a request (app/api/request_ids.py), the `mj.execute` and
`mj.webhook.deliver` shells set the task id for the span of a job (`log_context`). A logging
Filter copies them onto each record, so no call site has to pass them.

`MJQ_LOG_FORMAT=json` writes one JSON object per line (python-json-logger):
`{"ts", "level", "logger", "message", "role", "task_id"?, "request_id"?, "exc_info"?}`.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(role)s %(name)s:%(context)s %(message)s"
#: The keys of a JSON line besides the context ones, renamed from the LogRecord attributes.
JSON_FIELDS = ["levelname", "name", "message"]
JSON_RENAMES = {"levelname": "level", "name": "logger"}

#: What the records of the current request or job are about; None outside one.
task_id_var: ContextVar[str | None] = ContextVar("mjq_task_id", default=None)
request_id_var: ContextVar[str | None] = ContextVar("mjq_request_id", default=None)
delivery_id_var: ContextVar[str | None] = ContextVar("mjq_delivery_id", default=None)
_VARS = {"task_id": task_id_var, "request_id": request_id_var, "delivery_id": delivery_id_var}

# The process role is per process, fixed once known (set at configuration, refined by Celery's node name).
_role = {"name": "main"}


class ContextFilter(logging.Filter):
    """Copies the role and the context variables onto every record (as attributes, when set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role["name"]
        parts = []
        for key, var in _VARS.items():
            value = var.get()
            if value is not None:
                setattr(record, key, value)
                parts.append(f" {key}={value}")
        record.context = "".join(parts)
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per line; `ts` is ISO 8601 UTC."""
    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES, timestamp="ts", json_ensure_ascii=False)


def make_handler(stream: IO[str], fmt: str = "text") -> logging.Handler:
    """A handler writing `fmt` lines ("text" or "json") with the role and context fields to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str, fmt: str = "text", role: str | None = None) -> None:
    """Send records at `level` and above to stderr as `fmt` ("text" or "json"); idempotent.

    `role` names the process in every line ("web", "worker"...); a Celery worker refines
    "worker" to "worker-<node>" (worker-fast, worker-webhooks) once it knows its node name.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_mjq", False)), None)
    if handler is None:
        handler = make_handler(sys.stderr, fmt)
        handler._mjq = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.setLevel(level)
    if role is not None:
        _role["name"] = role
    if role == "worker":
        _name_worker_by_node()


def set_role(role: str) -> None:
    """Name this process in every later record."""
    _role["name"] = role


def _name_worker_by_node() -> None:
    from celery.signals import celeryd_init

    def named(sender: Any = None, **_: Any) -> None:
        # `-n fast@%h` → worker-fast: the Procfile names each worker by its queue.
        node = str(sender or "")
        if "@" in node:
            set_role(f"worker-{node.split('@', 1)[0]}")

    celeryd_init.connect(named, weak=False)


@contextmanager
def log_context(**values: str | int | None) -> Iterator[None]:
    """Within the block, every record of this thread (or asyncio task) carries `values`
    (task_id, request_id, delivery_id)."""
    tokens = [(_VARS[key], _VARS[key].set(None if value is None else str(value))) for key, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
