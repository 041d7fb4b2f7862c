"""`/submit/*` and `/insight-face/swap`: new jobs and follow-up actions."""
from __future__ import annotations

import functools
import json
from collections.abc import Callable

from flask import Blueprint, Response, request

from app import schemas
from app.api import path_image_mode, path_mode, services
from app.api.auth import caller
from app.api.responses import json_response
from app.db import db
from app.services import actions, idempotency
from app.services.submit import Submitter
from app.services.tenancy import SUBMITS, check_rate

bp = Blueprint("submit", __name__, url_prefix="/submit")
insight_face = Blueprint("insight_face", __name__, url_prefix="/insight-face")


def submitter() -> Submitter:
    svc = services()
    who = caller()
    return Submitter(db.session(), svc.dispatcher, svc.images, svc.settings, svc.prompts, owner=who.key_id,
                     scheduler=svc.scheduler, viewer=who.viewer, plans=svc.plans, prices=svc.prices,
                     image_mode=path_image_mode(), accounts=svc.accounts)


def limit_rate() -> None:
    """Per-key submit rate (the plan's submitsPerMinute), shared by every API process through Redis (429 with
    Retry-After). Every request, submits included, also counts against requestsPerMinute (app/api/auth.py)."""
    who = caller()
    plan = services().plans.get(who.plan or "")
    if who.key_id is not None and plan is not None:
        check_rate(services().redis, who.key_id, plan.submits_per_minute, SUBMITS)


def idempotent(view: Callable[[], Response]) -> Callable[[], Response]:
    """Honour an Idempotency-Key header: the same key and body answer the same, without a second job."""

    @functools.wraps(view)
    def wrapper() -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view()
        digest = idempotency.body_hash(request.path, request.get_data())
        answer = idempotency.run_once(db.session(), caller().key_id or "-", key, digest,
                                      lambda: json.loads(view().get_data()))
        return json_response(answer)

    return wrapper


bp.before_request(limit_rate)
insight_face.before_request(limit_rate)


def body() -> dict:
    return schemas.parse_json_body(request.get_data())


def limits() -> schemas.Limits:
    return schemas.Limits.of(services().settings)


@bp.post("/imagine")
@idempotent
def imagine() -> Response:
    return json_response(submitter().imagine(schemas.imagine_request(body(), limits()), path_mode()))


@bp.post("/describe")
@idempotent
def describe() -> Response:
    return json_response(submitter().describe(schemas.describe_request(body(), limits()), path_mode()))


@bp.post("/blend")
@idempotent
def blend() -> Response:
    return json_response(submitter().blend(schemas.blend_request(body(), limits()), path_mode()))


@bp.post("/shorten")
@idempotent
def shorten() -> Response:
    data = body()
    prompt = schemas.prompt_field(data, limits())
    assert prompt is not None
    return json_response(submitter().shorten(prompt, schemas.common(data), path_mode()))


@bp.post("/upload-discord-images")
@idempotent
def upload_images() -> Response:
    return json_response(submitter().upload(schemas.upload_request(body(), limits())))


@bp.post("/action")
@idempotent
def action() -> Response:
    return json_response(actions.submit_action(submitter(), schemas.action_request(body()), path_mode()))


@bp.post("/change")
@idempotent
def change() -> Response:
    task_id, action_name, index, common = schemas.change_request(body())
    return json_response(actions.submit_change(submitter(), task_id, action_name, index, common, path_mode()))


@bp.post("/simple-change")
@idempotent
def simple_change() -> Response:
    task_id, action_name, index, common = schemas.simple_change_request(body())
    return json_response(actions.submit_change(submitter(), task_id, action_name, index, common, path_mode()))


@bp.post("/modal")
@idempotent
def modal() -> Response:
    return json_response(actions.submit_modal(submitter(), schemas.modal_request(body(), limits()), path_mode()))


@insight_face.post("/swap")
@idempotent
def swap_face() -> Response:
    return json_response(submitter().swap_face(schemas.swap_request(body(), limits()), path_mode()))
