"""Who is signed in to the admin pages, the session secret, and the CSRF check."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from flask import abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from app.api.auth import BOOTSTRAP, Caller
from app.db import db
from app.models_tenancy import ApiKey
from app.services.keys import find_key
from config import Settings

#: File in MJQ_DATA_DIR holding the session secret when neither MJQ_SECRET_KEY nor MJQ_API_SECRET is set.
SESSION_KEY_FILE = "admin-session.key"
#: Endpoints reachable without signing in.
OPEN_ENDPOINTS = {"pages.login", "pages.static"}
CSRF_HEADER = "X-CSRF-Token"


def session_secret(settings: Settings) -> str:
    """Flask's SECRET_KEY: derived from MJQ_SECRET_KEY or MJQ_API_SECRET, else a secret kept per data dir."""
    material = settings.secret_key or settings.api_secret
    if material:
        return hmac.new(material.encode(), b"mjq admin session cookie", hashlib.sha256).hexdigest()
    path = Path(settings.data_dir) / SESSION_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: two gunicorn workers starting together agree on the first one written
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip()


def _secret_tag(api_secret: str) -> str:
    """What the session keeps for a secret login: changing MJQ_API_SECRET signs everyone out."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, api_secret.encode(), hashlib.sha256).hexdigest()


def open_mode() -> bool:
    return not current_app.extensions["mjq"].settings.api_secret


def sign_in(presented: str) -> bool:
    """Check `presented` (an admin key or MJQ_API_SECRET) and remember the admin in the session."""
    api_secret = current_app.extensions["mjq"].settings.api_secret
    presented = presented.strip()
    if not presented:
        return False
    if api_secret and hmac.compare_digest(presented.encode(), api_secret.encode()):
        who = {"kind": "secret", "tag": _secret_tag(api_secret)}
    else:
        key = find_key(db.session(), presented)
        if key is None or key.role != "admin":
            return False
        who = {"kind": "key", "id": key.id}
    session.clear()  # a fresh session (and CSRF token) at every sign-in: no fixation
    session["who"] = who
    session.permanent = False
    csrf_token()
    return True


def signed_in() -> Caller | None:
    """The admin of this session, or None. A revoked or demoted key ends its sessions at once."""
    if open_mode():
        return BOOTSTRAP
    who = session.get("who") or {}
    if who.get("kind") == "secret":
        api_secret = current_app.extensions["mjq"].settings.api_secret
        return BOOTSTRAP if hmac.compare_digest(str(who.get("tag", "")), _secret_tag(api_secret)) else None
    if who.get("kind") == "key":
        key = db.session.get(ApiKey, str(who.get("id")))
        if key is not None and key.revoked_at is None and key.role == "admin":
            return Caller(key_id=key.id, role=key.role, plan=key.plan, balance=key.balance)
    return None


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def _check_csrf() -> None:
    given = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token") or ""
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(given.encode(), str(expected).encode()):
        abort(400, description="missing or stale CSRF token: reload the page and try again")


def guard() -> Response | None:
    """Before every page: CSRF on POST, then sign-in (the caller lands in `g.caller` for the services)."""
    if request.method == "POST":
        _check_csrf()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    who = signed_in()
    if who is None:
        if request.accept_mimetypes.best == "application/json" or request.method == "POST":
            abort(401, description="sign in at /admin/login")
        return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
    g.caller = who
    return None
