"""`/task/*`: reading tasks."""
from __future__ import annotations

from flask import Blueprint, Response, request
from sqlalchemy import Select, select

from app import protocol, schemas
from app.api import services
from app.api.auth import caller
from app.api.images import task_json
from app.api.responses import json_response
from app.api.submit import submitter
from app.db import db, make_session_factory
from app.errors import BadRequest, TaskNotFound
from app.models import Task
from app.services import actions
from workers.drivers.discord_seed import seed_lookup_from_settings
from workers.events import TaskEvents

bp = Blueprint("tasks", __name__, url_prefix="/task")

#: Most ids one list-by-condition request may ask for.
MAX_IDS = 1000


@bp.get("/<task_id>/fetch")
def fetch(task_id: str) -> Response:
    return json_response(task_json(visible_task(task_id)))


def visible_task(task_id: str) -> Task:
    """The task `task_id` names, if the caller may see it. Raises TaskNotFound (404, code 3), worded the
    same for an unknown id, a malformed one and another key's task."""
    parsed = schemas.parse_task_id(task_id)
    task = db.session.get(Task, parsed) if parsed is not None else None
    if task is None or not visible(task):
        raise TaskNotFound(f"task {task_id} not found")
    return task


def visible(task: Task) -> bool:
    """A user key sees only its own tasks; another key's task reads exactly like an unknown id."""
    viewer = caller().viewer
    return viewer is None or task.owner == viewer


def scoped(query: Select) -> Select:
    viewer = caller().viewer
    return query if viewer is None else query.where(Task.owner == viewer)


@bp.post("/list-by-condition")
@bp.post("/list-by-ids")
def list_by_condition() -> Response:
    ids = schemas.task_ids(schemas.parse_json_body(request.get_data()), MAX_IDS)
    if not ids:
        return json_response([])
    found = {t.id: t for t in db.session.scalars(scoped(select(Task).where(Task.id.in_(ids))))}
    return json_response([task_json(found[i]) for i in ids if i in found])


def _limit() -> int:
    cap = services().settings.list_page_size
    raw = request.args.get("limit", request.args.get("pageSize"))
    if raw is None:
        return cap
    if not raw.isdigit() or not 1 <= int(raw) <= cap:
        raise BadRequest(f"limit must be 1..{cap}")
    return int(raw)


@bp.get("/list")
def list_tasks() -> Response:
    """Newest first, one page at a time: `?limit=N&before=<id>`; header X-Next-Before names the next page."""
    limit = _limit()
    query = scoped(select(Task).order_by(Task.id.desc()).limit(limit + 1))
    before = request.args.get("before")
    if before is not None:
        before_id = schemas.parse_task_id(before)
        if before_id is None:
            raise BadRequest("before must be a task id")
        query = query.where(Task.id < before_id)
    status = request.args.get("status")
    if status:
        query = query.where(Task.status == status.upper())
    rows = db.session.scalars(query).all()
    headers = {"X-Next-Before": str(rows[limit - 1].id)} if len(rows) > limit else None
    return json_response([task_json(t) for t in rows[:limit]], headers=headers)


@bp.get("/queue")
def queue() -> Response:
    """Tasks waiting or running, oldest first (bounded by the page size)."""
    rows = db.session.scalars(scoped(
        select(Task).where(Task.status.in_(protocol.OPEN_STATUSES)).order_by(Task.submit_time, Task.id)
        .limit(_limit())
    )).all()
    return json_response([task_json(t) for t in rows])


@bp.get("/<task_id>/image-seed")
def image_seed(task_id: str) -> Response:
    parsed = schemas.parse_task_id(task_id)
    if parsed is None:
        raise TaskNotFound(f"task {task_id} not found")
    seed = actions.image_seed(submitter(), parsed, seed_lookup_from_settings(services().settings, services().redis))
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, "Success", seed))


@bp.post("/<task_id>/cancel")
def cancel(task_id: str) -> Response:
    parsed = schemas.parse_task_id(task_id)
    if parsed is None:
        raise TaskNotFound(f"task {task_id} not found")
    svc = services()
    factory = make_session_factory(db.engine)
    data = actions.cancel(submitter(), parsed, lambda tid: TaskEvents(factory, svc.redis, tid, None,
                                                                       svc.event_writers))
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, "Cancelled", data["id"]))
