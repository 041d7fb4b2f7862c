"""`/admin/*`: API keys, credits, usage and statistics (admin keys only), and `/usage` for any key."""
from __future__ import annotations

from flask import Blueprint, Response, request

from app import protocol, schemas
from app.api import services
from app.api.auth import caller, require_admin
from app.api.responses import json_response
from app.db import db
from app.errors import NotFound, TaskNotFound, ValidationFailed
from app.models import now_ms
from app.services import keys, usage
from workers.billing import credit

bp = Blueprint("admin", __name__, url_prefix="/admin")
user = Blueprint("usage", __name__)

#: Longest note of a credit, in characters.
MAX_NOTE_CHARS = 1000
#: Largest balance or credit in tokens (far below the BIGINT column's limit, so sums cannot overflow).
MAX_TOKENS = 10**15
#: Usage and statistics look back this many days unless `?days=` says otherwise.
DEFAULT_DAYS = 30


def ok(result: object, description: str = "Success") -> Response:
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, description, result))


def _since() -> int:
    raw = request.args.get("days", str(DEFAULT_DAYS))
    if not raw.isdigit() or not 1 <= int(raw) <= 366:
        raise ValidationFailed("days must be 1..366")
    return now_ms() - int(raw) * 86_400_000


@bp.before_request
def admins_only() -> None:
    require_admin()


@bp.post("/keys")
def create_key() -> Response:
    body = schemas.parse_json_body(request.get_data())
    for field in ("name", "plan", "role"):
        if body.get(field) is not None and not isinstance(body[field], str):
            raise ValidationFailed(f"{field} must be a string")
    balance = body.get("balance")
    if balance is not None and (isinstance(balance, bool) or not isinstance(balance, int)
                                or not 0 <= balance <= MAX_TOKENS):
        raise ValidationFailed(f"balance must be a whole number of tokens, 0..{MAX_TOKENS} (omit it for unmetered)")
    plan = body.get("plan") or services().settings.default_plan
    row, key = keys.create_key(db.session(), str(body.get("name") or ""), plan, body.get("role") or "user",
                               services().plans, balance)
    return ok({"id": row.id, "key": key, "name": row.name, "plan": row.plan, "role": row.role,
               "balance": row.balance}, "Key created: store it now, it is not shown again")


@bp.get("/keys")
def list_keys() -> Response:
    return ok([k.to_json() for k in keys.list_keys(db.session())])


@bp.delete("/keys/<key_id>")
def revoke_key(key_id: str) -> Response:
    return ok(keys.revoke_key(db.session(), key_id).to_json(), "Key revoked")


@bp.post("/keys/<key_id>/credit")
def credit_key(key_id: str) -> Response:
    body = schemas.parse_json_body(request.get_data())
    amount = body.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0 or abs(amount) > MAX_TOKENS:
        raise ValidationFailed(f"amount must be a non-zero whole number of tokens, at most {MAX_TOKENS} either way")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
        raise ValidationFailed(f"note must be a string of at most {MAX_NOTE_CHARS} characters")
    try:
        balance = credit(db.session(), key_id, amount, note)
    except KeyError:
        raise NotFound(f"key {key_id} not found") from None
    return ok({"id": key_id, "balance": balance})


@bp.get("/usage")
def usage_of_any_key() -> Response:
    return ok(usage.usage(db.session(), request.args.get("keyId") or None, _since()))


@bp.get("/stats")
def statistics() -> Response:
    return ok(usage.statistics(db.session(), _since()))


@user.get("/usage")
def own_usage() -> Response:
    who = caller()
    if who.key_id is None and not who.is_admin:
        raise TaskNotFound("no key")
    return ok(usage.usage(db.session(), who.key_id, _since()))
