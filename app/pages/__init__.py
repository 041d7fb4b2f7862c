"""`/admin`: server-rendered admin pages (Jinja templates, a little vanilla JS, no build step).

The pages keep their own login: an admin API key or MJQ_API_SECRET, checked once and
remembered in Flask's signed session cookie (HttpOnly, SameSite=Lax). Every POST carries the
session's CSRF token (a form field, or the X-CSRF-Token header from the pages' JS). The
pages call the same service functions as the JSON API, as the signed-in admin, so the
browser never holds the credential itself. With no MJQ_API_SECRET (open mode) they are open.
"""
from __future__ import annotations

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState

from app.pages.session import guard, session_secret

bp = Blueprint("pages", __name__, url_prefix="/admin", template_folder="../templates",
               static_folder="../static/admin", static_url_path="/static")


def _configure(state: BlueprintSetupState) -> None:
    # The cookie is Secure when mjq is served over HTTPS; `make run` on loopback is plain HTTP.
    config, settings = state.app.config, state.app.extensions["mjq"].settings
    config.update(SECRET_KEY=config.get("SECRET_KEY") or session_secret(settings),
                  SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_NAME="mjq_admin",
                  SESSION_COOKIE_SECURE=settings.effective_public_url.startswith("https://"))


bp.record_once(_configure)
bp.before_request(guard)

from app.pages import manage, views  # noqa: E402,F401  (they add their routes to `bp`)
