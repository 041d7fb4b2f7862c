"""The one place errors become answers: ApiError → its envelope and status; HTTP errors →
the envelope with their status; an unreachable database → 503; anything else → 500, logged."""
from __future__ import annotations

import logging

from flask import Flask, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from app import protocol
from app.api.responses import json_response
from app.db import db
from app.errors import ApiError

log = logging.getLogger(__name__)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        db.session.rollback()
        return json_response(protocol.envelope(exc.code, exc.description, None, exc.properties), exc.http_status,
                             headers=exc.headers or None)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = protocol.CODE_NOT_FOUND if exc.code == 404 else protocol.CODE_VALIDATION_ERROR
        if exc.code == 413:
            description = f"request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        else:
            description = f"{exc.name}: {exc.description}"
        return json_response(protocol.envelope(code, description), exc.code or 500)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def database_unavailable(exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc)
        _safe_rollback()
        return json_response(protocol.envelope(protocol.CODE_FAILURE, "database unavailable, retry later"), 503,
                             headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return database_unavailable(exc)
        log.exception("unhandled error")
        _safe_rollback()
        return json_response(protocol.envelope(protocol.CODE_FAILURE, f"internal error: {type(exc).__name__}"), 500)


def _safe_rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection is already broken; nothing to undo
        pass
