"""The mjq web API: `create_app()` builds the Flask app from config."""
from __future__ import annotations

import io
import logging
from typing import IO, Any

from flask import Flask, Request
from redis import Redis
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
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
    app.request_class = BoundedRequest
    db.init_app(app)
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


class BoundedRequest(Request):
    """A request whose chunked body over MAX_CONTENT_LENGTH is a 413 when a view reads it, like a sized one.

    Werkzeug reads a body of unknown length up to the limit and then stops without an error, so a view
    would take the first MAX_CONTENT_LENGTH bytes for the whole body (a Content-Length body over the
    limit is refused before it is read). Nothing is read until a view asks: not for a 404, nor before
    the caller is authenticated.
    """

    @cached_property
    def stream(self) -> IO[bytes]:
        limit = self.max_content_length
        if limit is None or self.content_length is not None or "wsgi.input_terminated" not in self.environ \
                or "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return super().stream
        body = LimitedStream(self.environ["wsgi.input"], limit + 1, is_max=True).read()
        if len(body) > limit:
            raise RequestEntityTooLarge()
        return io.BytesIO(body)


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
