"""`/admin/*`: API keys, credits, usage and statistics (admin keys only); `/usage` and `/webhook-secret`
for any caller (its own; the bootstrap secret and open mode see the global webhook secret)."""
from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, request
from sqlalchemy.orm import Session

from app import protocol, schemas
from app.api import services
from app.api.accounts import box
from app.api.auth import caller, require_admin
from app.api.responses import json_response
from app.crypto import SecretKeyMissing, SecretUnreadable
from app.db import db
from app.errors import ApiError, NotFound, TaskNotFound, ValidationFailed
from app.image_modes import RELAY
from app.models import now_ms
from app.services import keys, usage
from app.services.keys import MAX_TOKENS
from workers.billing import credit

bp = Blueprint("admin", __name__, url_prefix="/admin")
user = Blueprint("usage", __name__)

#: Longest note of a credit, in characters.
MAX_NOTE_CHARS = 1000
#: Usage and statistics look back this many days unless `?days=` says otherwise.
DEFAULT_DAYS = 30
#: Fields of a key that `PATCH /admin/keys/<id>` changes.
UPDATABLE_KEY_FIELDS = frozenset({"imageMode"})


class WebhookSecretUnavailable(ApiError):
    """Raised when a key's stored webhook secret cannot be opened with MJQ_SECRET_KEY (code 9: configuration)."""


def ok(result: object, description: str = "Success") -> Response:
    return json_response(protocol.envelope(protocol.CODE_SUCCESS, description, result))


def _since() -> int:
    days = schemas.parse_digits(request.args.get("days", str(DEFAULT_DAYS)))
    if days is None or not 1 <= days <= 366:
        raise ValidationFailed("days must be 1..366")
    return now_ms() - days * 86_400_000


@bp.before_request
def admins_only() -> None:
    require_admin()


@bp.post("/keys")
def create_key() -> Response:
    body = schemas.parse_json_body(request.get_data())
    for field in ("name", "plan", "role", "imageMode"):
        if body.get(field) is not None and not isinstance(body[field], str):
            raise ValidationFailed(f"{field} must be a string")
    balance = body.get("balance")
    if balance is not None and (isinstance(balance, bool) or not isinstance(balance, int)):
        raise ValidationFailed(f"balance must be a whole number of tokens, 0..{MAX_TOKENS} (omit it for unmetered)")
    plan = body.get("plan") or services().settings.default_plan
    session = db.session()
    row, key = keys.create_key(session, str(body.get("name") or ""), plan, body.get("role") or "user",
                               services().plans, balance, body.get("imageMode") or RELAY, box())
    return ok({"id": row.id, "key": key, "name": row.name, "plan": row.plan, "role": row.role,
               "balance": row.balance, "imageMode": row.image_mode,
               "webhookSecret": _secret(keys.webhook_secret, session, row.id)},
              "Key created: store the key now, it is not shown again")


@bp.patch("/keys/<key_id>")
def update_key(key_id: str) -> Response:
    body = schemas.parse_json_body(request.get_data())
    unknown = sorted(set(body) - UPDATABLE_KEY_FIELDS)
    if unknown:
        raise ValidationFailed(f"{unknown[0]} cannot be changed (a key can change: {', '.join(UPDATABLE_KEY_FIELDS)})")
    session = db.session()
    row = keys.set_image_mode(session, key_id, body["imageMode"]) if "imageMode" in body else \
        keys.get_key(session, key_id)
    return ok(row.to_json(), "Key updated")


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


@user.get("/webhook-secret")
def own_webhook_secret() -> Response:
    return ok(_secret_json(_secret(keys.webhook_secret, db.session(), caller().key_id)))


@user.post("/webhook-secret")
def rotate_own_webhook_secret() -> Response:
    secret = _secret(keys.rotate_webhook_secret, db.session(), caller().key_id)
    return ok(_secret_json(secret), "Webhook secret rotated: attempts from now on are signed with it")


def _secret_json(secret: str) -> dict[str, object]:
    key_id = caller().key_id
    return {"keyId": key_id, "scope": "key" if key_id else "global", "webhookSecret": secret}


def _secret(action: Callable[..., str], session: Session, key_id: str | None) -> str:
    """`action` (read or rotate) on the webhook secret of `key_id` (None: the global one)."""
    try:
        return action(session, key_id, box(), services().settings.webhook_secret)
    except (SecretKeyMissing, SecretUnreadable) as exc:
        raise WebhookSecretUnavailable(str(exc)) from None
