"""Request ids: every request gets one (the caller's `X-Request-Id` when it is sane, else a new one),
every log line of the request carries it (workers/logs.py), and the response returns it.

One line per request is logged too: at DEBUG normally, at WARNING when it failed (5xx) or took
longer than SLOW_REQUEST_SECONDS, so production logs stay small and keep what needs a look.
"""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Blueprint, Response, g, request

from workers.logs import request_id_var

log = logging.getLogger("mjq.requests")

HEADER = "X-Request-Id"
#: What is accepted from a caller: short and plain, so it cannot forge log fields or lines.
_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
#: A request slower than this is logged at WARNING, seconds (SSE streams are long on purpose: not counted).
SLOW_REQUEST_SECONDS = 2.0

_TOKEN = "mjq.request_id_token"

bp = Blueprint("request_ids", __name__)


@bp.before_app_request
def take_request_id() -> None:
    sent = request.headers.get(HEADER, "")
    g.request_id = sent if _SANE.fullmatch(sent) else uuid.uuid4().hex
    # The token lives on this request, not on `g`: `g` belongs to the app context, which a request made
    # from inside another (a test client re-entering the app) shares with it.
    request.environ[_TOKEN] = request_id_var.set(g.request_id)
    g.request_started = time.perf_counter()


@bp.after_app_request
def return_request_id(response: Response) -> Response:
    if "request_id" not in g:
        return response
    response.headers[HEADER] = g.request_id
    seconds = time.perf_counter() - g.request_started
    slow = seconds > SLOW_REQUEST_SECONDS and response.mimetype != "text/event-stream"
    level = logging.WARNING if response.status_code >= 500 or slow else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(level, "%s %s %s %.1f ms", request.method, request.path, response.status_code, seconds * 1000)
    return response


@bp.teardown_app_request
def forget_request_id(_exc: BaseException | None) -> None:
    token = request.environ.pop(_TOKEN, None)
    if token is not None:
        request_id_var.reset(token)
