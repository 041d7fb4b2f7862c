"""The mjq web API: `create_app()` builds the Flask app from config."""
from __future__ import annotations

import io
import logging
from typing import Any

from flask import Flask, request
from redis import Redis
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from app.db import db, engine_options
from app.images import ImageStore, make_image_store
from app.services.accounts import AccountDirectory
from config import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, celery: Any = None, redis: Redis | None = None) -> Flask:
    """Build the app. `celery` and `redis` default to clients for REDIS_URL (tests pass their own)."""
    from app.api import register_api
    from app.api.errors import register_error_handlers
    from app.services.plans import plans_from_json, prices_from_json
    from app.services.prompts import PromptChecker
    from workers.celery_app import make_celery
    from workers.dispatch import Dispatcher
    from workers.logs import configure_logging
    from workers.scheduler import Scheduler
    from workers.webhook_outbox import WebhookOutbox
    from workers.webhooks import celery_enqueuer

    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format, role="web")
    app = Flask(__name__)
    url = settings.effective_database_url
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(url),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    db.init_app(app)
    app.before_request(read_unsized_body)
    app.extensions["mjq"] = Services(
        settings=settings,
        dispatcher=Dispatcher(celery or make_celery(settings)),
        images=make_image_store(settings),
        redis=redis or Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
        prompts=PromptChecker.from_settings(settings),
    )
    services = app.extensions["mjq"]
    services.scheduler = Scheduler(services.redis, settings.slot_lease_seconds, settings.account_choose_rule)
    services.plans = plans_from_json(settings.plans_json)
    # What a transition made by the API (cancel) writes in its transaction: the webhook delivery.
    services.event_writers = [WebhookOutbox(settings.webhook_progress_interval_seconds, settings.webhook_schedule[0],
                                            celery_enqueuer(services.dispatcher.celery), images=services.images,
                                            image_proxy_url=settings.image_proxy_url)]
    services.prices = prices_from_json(settings.prices_json)
    register_error_handlers(app)
    register_api(app)
    return app


def read_unsized_body() -> None:
    """Read a body of unknown length (chunked) before the view, refusing one over MAX_CONTENT_LENGTH with 413.

    Werkzeug reads such a stream up to the limit and then stops without an error, so a view would
    take the first MAX_CONTENT_LENGTH bytes for the whole body; a Content-Length body over the limit
    is refused before it is read. Raises RequestEntityTooLarge.
    """
    limit = request.max_content_length
    if limit is None or request.content_length is not None or "wsgi.input_terminated" not in request.environ \
            or "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return
    body = LimitedStream(request.environ["wsgi.input"], limit + 1, is_max=True).read()
    if len(body) > limit:
        raise RequestEntityTooLarge()
    request.environ["wsgi.input"] = io.BytesIO(body)


class Services:
    """What views need besides the database session, built once per app."""

    def __init__(self, settings: Settings, dispatcher: Any, images: ImageStore, redis: Redis,
                 prompts: Any) -> None:
        self.scheduler: Any = None
        #: The enabled accounts, cached for every submit of this process (app/services/accounts.py).
        self.accounts = AccountDirectory()
        self.plans: dict[str, Any] = {}
        self.event_writers: list[Any] = []
        self.prices: dict[str, tuple[int, int]] = {}
        self.settings = settings
        self.prompts = prompts
        self.dispatcher = dispatcher
        self.images = images
        self.redis = redis
