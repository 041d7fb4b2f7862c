"""Endpoints other systems call back on, outside the public `/mj` API and its keys.

`POST /internal/mjproxy/<account id>/notify?sig=<hex>`: the notify hook mjq gives an upstream
midjourney-proxy with each job (workers/drivers/mjproxy.py). Upstreams POST the task JSON
with no header of ours, so the per-account secret is the `sig` query parameter:
HMAC-SHA256 of the account id under MJQ_SECRET_KEY (else MJQ_API_SECRET), compared in
constant time. A valid event is published on Redis (`mjq:upstream:<account id>`) for
whichever worker follows that upstream task.
"""
from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, request
from redis.exceptions import RedisError

from app import protocol
from app.api import services
from app.api.responses import json_response
from app.errors import BadRequest, ServiceUnavailable, Unauthorized, ValidationFailed
from workers.drivers.mjproxy_watch import callback_key, publish_event, signature_matches

log = logging.getLogger(__name__)

bp = Blueprint("internal", __name__, url_prefix="/internal")

_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATUSES = frozenset({protocol.NOT_START, protocol.SUBMITTED, protocol.IN_PROGRESS, protocol.SUCCESS,
                       protocol.FAILURE, protocol.MODAL, protocol.CANCEL})


@bp.post("/mjproxy/<account_id>/notify")
def mjproxy_notify(account_id: str) -> Response:
    key = callback_key(services().settings)
    if not _ACCOUNT_RE.match(account_id) or not signature_matches(key, account_id, request.args.get("sig")):
        raise Unauthorized("bad or missing sig for this account's notify hook")
    task = request.get_json(silent=True)
    if not isinstance(task, dict):
        raise BadRequest("the body must be the upstream task as a JSON object")
    if not _TASK_ID_RE.match(str(task.get("id") or "")):
        raise ValidationFailed("id must be the upstream task id")
    if task.get("status") not in _STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(sorted(_STATUSES))}")
    if not isinstance(task.get("properties") or {}, dict) or not isinstance(task.get("buttons") or [], list):
        raise ValidationFailed("properties must be an object and buttons a list")
    try:
        listeners = publish_event(services().redis, account_id, task)
    except RedisError as exc:
        log.warning("upstream event of %s/%s not published: %s", account_id, task["id"], exc)
        raise ServiceUnavailable("events cannot be published right now; send it again later",
                                 headers={"Retry-After": "5"}) from None
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, "Received", str(task["id"]),
                                           {"listeners": listeners}))
