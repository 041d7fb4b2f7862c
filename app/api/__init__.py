"""Blueprints. The `/mj` API is mounted under `/mj` and the mode prefixes `/mj-fast/mj`, `/mj-relax/mj`,
`/mj-turbo/mj`, and again under each one's image-mode twins (`/mj-origin/mj`, `/mj-fast-proxy/mj`, ...);
the mount a request came through names its mode and its image URL mode."""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, g, request

from app import Services
from app.api.auth import authenticate

MOUNTS = {"mj": ("/mj", None), "mj_fast": ("/mj-fast/mj", "FAST"), "mj_relax": ("/mj-relax/mj", "RELAX"),
          "mj_turbo": ("/mj-turbo/mj", "TURBO")}
#: The image URL mode each mount promises (app/image_modes.py): the mounts above relay; each also has
#: `-origin`, `-relay` and `-proxy` twins (`/mj-relax-proxy/mj`, `/mj-origin/mj`, ...).
IMAGE_MODES = {name: "relay" for name in MOUNTS}
IMAGE_MODES.update({f"{name}_{image_mode}": image_mode for name in list(MOUNTS)
                    for image_mode in ("origin", "relay", "proxy")})
MOUNTS.update({name: (f"/{name.replace('_', '-')}/mj", MOUNTS[name.rsplit("_", 1)[0]][1])
               for name in IMAGE_MODES if name not in MOUNTS})
#: Endpoints anyone may call: images are fetched by browsers and chat clients without headers.
PUBLIC_ENDPOINTS = {"images.image"}


def services() -> Services:
    return current_app.extensions["mjq"]


def path_mode() -> str | None:
    """FAST/RELAX/TURBO when the request came through a mode prefix, else None."""
    top = request.blueprints[-1] if request.blueprints else ""
    return MOUNTS.get(top, ("", None))[1]


def path_image_mode() -> str:
    """relay/origin/proxy: the image URL mode of the mount the request came through (relay by default)."""
    top = request.blueprints[-1] if request.blueprints else ""
    return IMAGE_MODES.get(top, "relay")


def require_caller() -> None:
    """Authenticate every /mj request except the public ones; the caller lands in `flask.g`."""
    endpoint = (request.endpoint or "").split(".", 1)[-1]
    if endpoint in PUBLIC_ENDPOINTS:
        return
    g.caller = authenticate(services().settings.api_secret)


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

    mj = build_mj_blueprint()
    for name, (prefix, _mode) in MOUNTS.items():
        app.register_blueprint(mj, url_prefix=prefix, name=name)
    app.register_blueprint(health.bp)
    app.register_blueprint(internal.bp)  # callbacks from upstreams: own auth, outside /mj
    app.register_blueprint(metrics.bp)  # Prometheus, outside /mj: own token (MJQ_METRICS_TOKEN)
    app.register_blueprint(request_ids.bp)  # X-Request-Id on every request and its log lines
    app.register_blueprint(docs.bp)  # /openapi.json and /docs: public
    app.register_blueprint(pages.bp)  # /admin: server-rendered admin pages, own session login
