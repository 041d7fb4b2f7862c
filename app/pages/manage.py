"""The admin pages about the fleet: accounts (enable, disable), API keys, webhook redelivery."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app import schemas
from app.api import services
from app.api.accounts import account_json
from app.db import db
from app.errors import ApiError, TaskNotFound, ValidationFailed
from app.pages import bp
from app.services import account_admin, keys
from workers.webhook_outbox import DeliveryNotFound, RedeliveryRefused, redeliver
from workers.webhooks import celery_enqueuer


@bp.get("/accounts")
def accounts() -> str:
    rows, _total = account_admin.list_accounts(db.session())
    return render_template("admin/accounts.html", accounts=[account_json(a) for a in rows])


@bp.post("/accounts/<account_id>/enable")
def enable_account(account_id: str) -> Response:
    account_admin.set_enabled(db.session(), account_id, True)
    flash(f"Account {account_id} enabled.", "ok")
    return redirect(url_for("pages.accounts"))


@bp.post("/accounts/<account_id>/disable")
def disable_account(account_id: str) -> Response:
    reason = request.form.get("reason", "").strip() or None
    account_admin.set_enabled(db.session(), account_id, False, reason)
    flash(f"Account {account_id} disabled.", "ok")
    return redirect(url_for("pages.accounts"))


def _keys_page(created: dict[str, str] | None = None, status: int = 200) -> tuple[str, int]:
    svc = services()
    return render_template("admin/keys.html", keys=[k.to_json() for k in keys.list_keys(db.session())],
                           plans=list(svc.plans), default_plan=svc.settings.default_plan, roles=keys.ROLES,
                           created=created), status


@bp.get("/keys")
def keys_page() -> tuple[str, int]:
    return _keys_page()


@bp.post("/keys")
def create_key() -> tuple[str, int]:
    """Create a key and show it this once (the page is not a redirect, so a reload does not show it again)."""
    form = request.form
    raw_balance = form.get("balance", "").strip()
    balance = schemas.parse_digits(raw_balance) if raw_balance else None
    try:
        if raw_balance and balance is None:
            raise ValidationFailed("balance must be a whole number of tokens, 0 or more (empty: unmetered)")
        row, key = keys.create_key(db.session(), form.get("name", "").strip(),
                                   form.get("plan") or services().settings.default_plan, form.get("role", "user"),
                                   services().plans, balance)
    except ApiError as exc:
        db.session.rollback()
        flash(exc.description, "error")
        return _keys_page(status=400)
    return _keys_page({"id": row.id, "name": row.name, "key": key})


@bp.post("/keys/<key_id>/revoke")
def revoke_key(key_id: str) -> Response:
    keys.revoke_key(db.session(), key_id)
    flash(f"Key {key_id} revoked.", "ok")
    return redirect(url_for("pages.keys_page"))


@bp.post("/task/<task_id>/deliveries/<delivery_id>/redeliver")
def redeliver_one(task_id: str, delivery_id: str) -> Response:
    parsed_task, parsed_delivery = schemas.parse_task_id(task_id), schemas.parse_task_id(delivery_id)
    if parsed_task is None or parsed_delivery is None:
        raise TaskNotFound(f"delivery {delivery_id} of task {task_id} not found")
    try:
        redeliver(db.session(), parsed_task, parsed_delivery, celery_enqueuer(services().dispatcher.celery))
        flash(f"Delivery {delivery_id} scheduled again.", "ok")
    except (DeliveryNotFound, RedeliveryRefused) as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for("pages.task_page", task_id=task_id) + "#deliveries")
