"""The admin pages about tasks: sign-in, dashboard, gallery, one task (live), and new imagines."""
from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, session, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from app import protocol, schemas
from app.api import services
from app.api.responses import json_response
from app.api.stream import stream_one
from app.api.submit import submitter
from app.db import db
from app.errors import ApiError, TaskNotFound
from app.models import Task
from app.pages import bp
from app.pages.dashboard import overview
from app.pages.session import csrf_token, open_mode, sign_in
from app.services import actions, keys
from workers.webhook_outbox import deliveries_of

#: Tasks on one gallery page.
GALLERY_PAGE_SIZE = 24
#: Modes the imagine form offers (the account's and MJQ_MODES filter still apply).
MODES = ("FAST", "RELAX", "TURBO")
STATUSES = (protocol.NOT_START, protocol.SUBMITTED, protocol.IN_PROGRESS, protocol.SUCCESS, protocol.FAILURE,
            protocol.MODAL, protocol.CANCEL)
#: Gallery filters: query parameter → Task column.
FILTERS = {"status": Task.status, "action": Task.action, "mode": Task.mode, "owner": Task.owner}


@bp.app_context_processor
def page_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "open_mode": open_mode}


def _safe_next(target: str | None) -> str:
    # Only paths inside the pages: a login link must not bounce to another site.
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("pages.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    if request.method == "POST":
        if sign_in(request.form.get("key", "")):
            return redirect(_safe_next(request.args.get("next")))
        flash("That is not an admin key or the API secret.", "error")
        return render_template("admin/login.html"), 401
    return render_template("admin/login.html"), 200


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("pages.login"))


@bp.get("/")
def dashboard() -> str:
    return render_template("admin/dashboard.html", **overview(db.session()))


@bp.get("/tasks")
def gallery() -> str:
    query = select(Task).order_by(Task.id.desc()).limit(GALLERY_PAGE_SIZE + 1)
    filters = {name: request.args.get(name, "").strip() for name in FILTERS}
    for name, value in filters.items():
        if value:
            query = query.where(FILTERS[name] == (value if name == "owner" else value.upper()))
    before = schemas.parse_task_id(request.args.get("before", ""))
    if before is not None:
        query = query.where(Task.id < before)
    rows = db.session.scalars(query).all()
    more = len(rows) > GALLERY_PAGE_SIZE
    tasks = [row_json(t) for t in rows[:GALLERY_PAGE_SIZE]]
    next_args = {**{k: v for k, v in filters.items() if v}, "before": tasks[-1]["id"]} if more else None
    return render_template("admin/gallery.html", tasks=tasks, filters=filters, next_args=next_args,
                           statuses=STATUSES, modes=MODES, keys=[k.to_json() for k in keys.list_keys(db.session())])


def row_json(task: Task) -> dict[str, Any]:
    """The task JSON clients see, plus what only admins are shown (mode, account, owner key)."""
    return {**task.to_json(), "mode": task.mode, "accountId": task.account_id, "owner": task.owner,
            "parentId": str(task.parent_id) if task.parent_id else None}


def _task(task_id: str) -> Task:
    parsed = schemas.parse_task_id(task_id)
    task = db.session.get(Task, parsed) if parsed is not None else None
    if task is None:
        raise TaskNotFound(f"task {task_id} not found")
    return task


@bp.get("/task/<task_id>")
def task_page(task_id: str) -> str:
    task = _task(task_id)
    return render_template("admin/task.html", task=row_json(task), deliveries=deliveries_of(db.session(), task.id),
                           stream_url=url_for("pages.task_stream", task_id=task.id))


# Live progress: the API's Server-Sent Events view, served here under the session's sign-in
# (EventSource cannot send the mj-api-secret header). The page polls task_json if it breaks.
bp.add_url_rule("/task/<task_id>/stream", "task_stream", stream_one)


@bp.get("/task/<task_id>.json")
def task_json(task_id: str) -> Response:
    """The task JSON the page polls while the task runs."""
    return json_response(_task(task_id).to_json())


@bp.route("/imagine", methods=["GET", "POST"])
def imagine() -> Response | str:
    if request.method == "GET":
        return render_template("admin/imagine.html", modes=MODES, prompt="")
    prompt, mode = request.form.get("prompt", ""), request.form.get("mode", "")
    try:
        req = schemas.imagine_request({"prompt": prompt}, schemas.Limits.of(services().settings))
        answer = submitter().imagine(req, mode if mode in MODES else None)
    except ApiError as exc:
        db.session.rollback()
        flash(exc.description, "error")
        return render_template("admin/imagine.html", modes=MODES, prompt=prompt)
    if answer.get("code") not in (protocol.CODE_SUCCESS, protocol.CODE_IN_QUEUE) or not answer.get("result"):
        flash(str(answer.get("description")), "error")
        return render_template("admin/imagine.html", modes=MODES, prompt=prompt)
    return redirect(url_for("pages.task_page", task_id=answer["result"]))


@bp.post("/task/<task_id>/action")
def click(task_id: str) -> Response:
    """A button of the task, clicked on its page: the same envelope as POST /mj/submit/action."""
    body = schemas.parse_json_body(request.get_data())
    req = schemas.action_request({"taskId": task_id, "customId": body.get("customId")})
    return json_response(actions.submit_action(submitter(), req, None))


@bp.post("/task/<task_id>/modal")
def modal(task_id: str) -> Response:
    """Complete a MODAL task (code 21) with its prompt, and a mask for Vary (Region)."""
    body = schemas.parse_json_body(request.get_data())
    req = schemas.modal_request({"taskId": task_id, "prompt": body.get("prompt"),
                                 "maskBase64": body.get("maskBase64")}, schemas.Limits.of(services().settings))
    return json_response(actions.submit_modal(submitter(), req, None))
