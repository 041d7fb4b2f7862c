"""`/account/*`: the admin API of upstream accounts (admin keys only). Secrets go in, never out."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.sansio.blueprints import BlueprintSetupState
from redis.exceptions import RedisError

from app import protocol, schemas
from app.api import services
from app.api.auth import require_admin
from app.api.responses import json_response
from app.crypto import SecretBox
from app.db import db
from app.errors import ValidationFailed
from app.models import Account
from app.services import account_admin
from workers.scheduler import pool_of

log = logging.getLogger(__name__)

bp = Blueprint("accounts", __name__, url_prefix="/account")

#: Largest page of `POST /account/query`.
MAX_PAGE_SIZE = 100
#: Highest `pageNumber`: keeps the row offset (pageNumber × pageSize) inside a 64-bit integer for PostgreSQL.
MAX_PAGE_NUMBER = 1_000_000
#: The Flask extension slot holding this app's SecretBox.
BOX_EXTENSION = "mjq_secret_box"


def _attach_box(state: BlueprintSetupState) -> None:
    # Built when the app is: a malformed MJQ_SECRET_KEY stops create_app(), naming the variable.
    state.app.extensions[BOX_EXTENSION] = SecretBox.from_settings(state.app.extensions["mjq"].settings)


bp.record_once(_attach_box)


@bp.before_request
def admins_only() -> None:
    require_admin()


def box() -> SecretBox:
    return current_app.extensions[BOX_EXTENSION]


def health(account: Account) -> dict[str, Any] | None:
    """Slots in use and jobs waiting per pool, from the scheduler; None when Redis does not answer."""
    scheduler = services().scheduler
    try:
        return {pool: {"inFlight": scheduler.holders(account.id, pool),
                       "waiting": len(scheduler.waiting(account.id, pool))}
                for pool in (pool_of("FAST"), pool_of("RELAX"))}
    except RedisError as exc:
        log.warning("account %s: no health from Redis: %s", account.id, exc)
        return None


def account_json(account: Account) -> dict[str, Any]:
    return {**account.to_json(), "health": health(account)}


def ok(account: Account, description: str) -> Response:
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, description, account_json(account)))


@bp.post("/create")
def create() -> Response:
    body = schemas.parse_json_body(request.get_data())
    return ok(account_admin.create_account(db.session(), body, box()), "Account created")


@bp.get("/list")
def list_all() -> Response:
    rows, _total = account_admin.list_accounts(db.session())
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, "Success", [account_json(a) for a in rows]))


@bp.post("/query")
def query() -> Response:
    """One page, as the midjourney-proxy Plus admin UI asks: `{pageNumber (from 0), pageSize}` → a bare page."""
    body = schemas.parse_json_body(request.get_data() or b"{}")
    number, size = body.get("pageNumber", 0), body.get("pageSize", 10)
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= MAX_PAGE_NUMBER:
        raise ValidationFailed(f"pageNumber must be a whole number 0..{MAX_PAGE_NUMBER}")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationFailed(f"pageSize must be a whole number 1..{MAX_PAGE_SIZE}")
    rows, total = account_admin.list_accounts(db.session(), number * size, size)
    pages = -(-total // size)
    return json_response({"content": [account_json(a) for a in rows], "number": number, "size": size,
                          "totalElements": total, "totalPages": pages, "first": number == 0,
                          "last": number >= pages - 1})


@bp.get("/<account_id>/fetch")
def fetch(account_id: str) -> Response:
    return ok(account_admin.get_account(db.session(), account_id), "Success")


@bp.put("/<account_id>/update")
def update(account_id: str) -> Response:
    body = schemas.parse_json_body(request.get_data())
    return ok(account_admin.update_account(db.session(), account_id, body, box()), "Account updated")


@bp.delete("/<account_id>/delete")
def delete(account_id: str) -> Response:
    gone = account_admin.delete_account(db.session(), account_id)
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, "Account deleted", gone))


@bp.post("/<account_id>/enable")
def enable(account_id: str) -> Response:
    return ok(account_admin.set_enabled(db.session(), account_id, True), "Account enabled")


@bp.post("/<account_id>/disable")
def disable(account_id: str) -> Response:
    body = schemas.parse_json_body(request.get_data()) if request.get_data().strip() else {}
    return ok(account_admin.set_enabled(db.session(), account_id, False, body.get("reason")), "Account disabled")
