"""`/task/*`: reading tasks."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy import Row, Select, bindparam, select

from app import protocol, schemas
from app.api import services
from app.api.auth import caller
from app.api.images import task_presenter
from app.api.responses import json_response
from app.api.submit import submitter
from app.db import db, make_session_factory
from app.errors import BadRequest, TaskNotFound
from app.models import TASK_JSON_COLUMNS, Task, task_json_of_row
from app.services import actions
from workers.drivers.discord_seed import seed_lookup_from_settings
from workers.events import TaskEvents

bp = Blueprint("tasks", __name__, url_prefix="/task")

#: Most ids one list-by-condition request may ask for.
MAX_IDS = 1000

#: The readers below select plain rows of the task object's columns, not Task objects: loading ORM
#: instances (and the unused `inputs` JSON) cost more CPU than the query itself (bench P5). Their clauses
#: use the table's columns too, so the statements stay Core and skip the ORM's execution path.
TASKS = Task.__table__.c
JSON_COLUMNS = tuple(TASKS[name] for name in TASK_JSON_COLUMNS)
#: Built once, so their cache keys are computed once (an admin's reads run them as they are): building and
#: keying a select of 15 columns was about a tenth of a fetch's CPU.
BY_ID = select(*JSON_COLUMNS).where(TASKS.id == bindparam("id"))
BY_IDS = select(*JSON_COLUMNS).where(TASKS.id.in_(bindparam("ids", expanding=True)))


def shown(rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """The task objects of `rows` (JSON_COLUMNS) as this request shows them (its image URL mode)."""
    if not rows:
        return []  # nothing to show: no need to look up the caller's image mode
    show = task_presenter()
    return [show(task_json_of_row(row)) for row in rows]


@bp.get("/<task_id>/fetch")
def fetch(task_id: str) -> Response:
    """One task; another key's task reads exactly like an unknown id (404, code 3), as in visible_task."""
    parsed = schemas.parse_task_id(task_id)
    row = None if parsed is None else db.session.execute(scoped(BY_ID), {"id": parsed}).first()
    if row is None:
        raise TaskNotFound(f"task {task_id} not found")
    return json_response(shown([row])[0])


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
    """`query` limited to the tasks the caller may see (an ORM select of Task or a Core one of its columns)."""
    viewer = caller().viewer
    return query if viewer is None else query.where(TASKS.owner == viewer)


@bp.post("/list-by-condition")
@bp.post("/list-by-ids")
def list_by_condition() -> Response:
    ids = schemas.task_ids(schemas.parse_json_body(request.get_data()), MAX_IDS)
    if not ids:
        return json_response([])
    rows = db.session.execute(scoped(BY_IDS), {"ids": ids}).all()
    found = {row.id: row for row in rows}
    return json_response(shown([found[i] for i in ids if i in found]))


def _limit() -> int:
    cap = services().settings.list_page_size
    raw = request.args.get("limit", request.args.get("pageSize"))
    if raw is None:
        return cap
    limit = schemas.parse_digits(raw)
    if limit is None or not 1 <= limit <= cap:
        raise BadRequest(f"limit must be 1..{cap}")
    return limit


@bp.get("/list")
def list_tasks() -> Response:
    """Newest first, one page at a time: `?limit=N&before=<id>`; header X-Next-Before names the next page."""
    limit = _limit()
    query = scoped(select(*JSON_COLUMNS).order_by(TASKS.id.desc()).limit(limit + 1))
    before = request.args.get("before")
    if before is not None:
        before_id = schemas.parse_task_id(before)
        if before_id is None:
            raise BadRequest("before must be a task id")
        query = query.where(TASKS.id < before_id)
    status = request.args.get("status")
    if status:
        query = query.where(TASKS.status == status.upper())
    rows = db.session.execute(query).all()
    headers = {"X-Next-Before": str(rows[limit - 1].id)} if len(rows) > limit else None
    return json_response(shown(rows[:limit]), headers=headers)


@bp.get("/queue")
def queue() -> Response:
    """Tasks waiting or running, oldest first (bounded by the page size)."""
    rows = db.session.execute(scoped(
        select(*JSON_COLUMNS).where(TASKS.status.in_(protocol.OPEN_STATUSES)).order_by(TASKS.submit_time, TASKS.id)
        .limit(_limit())
    )).all()
    return json_response(shown(rows))


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
