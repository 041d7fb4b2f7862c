"""Blueprints. The `/mj` API is mounted under `/mj` and the mode prefixes `/mj-fast/mj`, `/mj-relax/mj`,
`/mj-turbo/mj`, and again under each one's image-mode twins (`/mj-origin/mj`, `/mj-fast-proxy/mj`, ...);
the mount a request came through names its mode and its image URL mode."""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, g, request

from app import Services, schemas
from app.api.auth import authenticate, caller
from app.db import db
from app.image_modes import ORIGIN, PROXY, RELAY, key_image_mode

MOUNTS = {"mj": ("/mj", None), "mj_fast": ("/mj-fast/mj", "FAST"), "mj_relax": ("/mj-relax/mj", "RELAX"),
          "mj_turbo": ("/mj-turbo/mj", "TURBO")}
#: The image URL mode each twin mount names (app/image_modes.py): every mount above also has `-origin`,
#: `-relay` and `-proxy` twins (`/mj-relax-proxy/mj`, `/mj-origin/mj`, ...); the mounts above name none.
NAMED_IMAGE_MODES = {f"{name}_{image_mode}": image_mode for name in list(MOUNTS)
                     for image_mode in (ORIGIN, RELAY, PROXY)}
MOUNTS.update({name: (f"/{name.replace('_', '-')}/mj", MOUNTS[name.rsplit("_", 1)[0]][1])
               for name in NAMED_IMAGE_MODES})
#: Endpoints anyone may call: images are fetched by browsers and chat clients without headers.
PUBLIC_ENDPOINTS = {"images.image"}


def services() -> Services:
    return current_app.extensions["mjq"]


def path_mode() -> str | None:
    """FAST/RELAX/TURBO when the request came through a mode prefix, else None."""
    top = request.blueprints[-1] if request.blueprints else ""
    return MOUNTS.get(top, ("", None))[1]


def path_image_mode() -> str:
    """relay/origin/proxy for this request: the mount's when it names one (`/mj-proxy/mj`), else the calling
    key's `imageMode`, else relay (the bootstrap secret, open mode)."""
    top = request.blueprints[-1] if request.blueprints else ""
    named = NAMED_IMAGE_MODES.get(top)
    if named is not None:
        return named
    key_id = caller().key_id
    if key_id is None:
        return RELAY
    if "mjq_key_image_mode" not in g:  # once per request: list answers serialize many tasks
        g.mjq_key_image_mode = key_image_mode(db.session(), key_id)
    return str(g.mjq_key_image_mode)


def require_caller() -> None:
    """Authenticate every /mj request except the public ones; the caller lands in `flask.g`."""
    endpoint = (request.endpoint or "").split(".", 1)[-1]
    if endpoint in PUBLIC_ENDPOINTS:
        return
    g.caller = authenticate(services().settings.api_secret)


def refuse_nul_characters() -> None:
    """A NUL in the query or in a form reaches a PostgreSQL parameter (a 500 there): refused as bad input.
    JSON bodies are checked where they are parsed (`schemas.parse_json_body`)."""
    schemas.refuse_nul_in_query(request.query_string)
    if request.mimetype == "application/x-www-form-urlencoded":
        schemas.refuse_nul_in_query(request.get_data(cache=True))


def build_mj_blueprint() -> Blueprint:
    from app.api import accounts, admin, images, stream, submit, tasks, webhooks

    mj = Blueprint("mj", __name__)
    mj.before_request(require_caller)
    mj.register_blueprint(submit.bp)
    mj.register_blueprint(submit.insight_face)
    mj.register_blueprint(tasks.bp)
    mj.register_blueprint(stream.bp)  # live progress: Server-Sent Events
    mj.register_blueprint(webhooks.bp)
    mj.register_blueprint(images.bp)
    mj.register_blueprint(admin.bp)
    mj.register_blueprint(admin.user)
    mj.register_blueprint(accounts.bp)
    return mj


def register_api(app: Flask) -> None:
    from app import pages
    from app.api import docs, health, internal, metrics, request_ids

    app.before_request(refuse_nul_characters)
    mj = build_mj_blueprint()
    for name, (prefix, _mode) in MOUNTS.items():
        app.register_blueprint(mj, url_prefix=prefix, name=name)
    app.register_blueprint(health.bp)
    app.register_blueprint(internal.bp)  # callbacks from upstreams: own auth, outside /mj
    app.register_blueprint(metrics.bp)  # Prometheus, outside /mj: own token (MJQ_METRICS_TOKEN)
    app.register_blueprint(request_ids.bp)  # X-Request-Id on every request and its log lines
    app.register_blueprint(docs.bp)  # /openapi.json and /docs: public
    app.register_blueprint(pages.bp)  # /admin: server-rendered admin pages, own session login
