"""API errors. Each carries its protocol code and HTTP status; one handler in app/__init__.py
turns any of them into the `{code, description, result, properties}` envelope."""
from __future__ import annotations

from typing import Any

from app import protocol
from config.errors import MjqError


class ApiError(MjqError):
    """Raised by a view or service to answer with an envelope instead of a result."""

    code = protocol.CODE_FAILURE
    http_status = 200

    def __init__(self, description: str, properties: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.properties = properties or {}
        self.headers = headers or {}


class ValidationFailed(ApiError):
    """Raised when a field of a request is missing or invalid; the description names the field."""

    code = protocol.CODE_VALIDATION_ERROR


class BadRequest(ValidationFailed):
    """Raised when the request cannot be read at all (not JSON, not an object)."""

    http_status = 400


class NotFound(ApiError):
    """Raised when a referenced task or account does not exist (or is not the caller's)."""

    code = protocol.CODE_NOT_FOUND


class TaskNotFound(NotFound):
    """Raised by the task endpoints for an unknown id: HTTP 404 with a code-3 body."""

    http_status = 404


class NoAccount(NotFound):
    """Raised when no enabled account can run the job."""


class Unauthorized(ApiError):
    """Raised when the API secret is required and missing or wrong."""

    http_status = 401


class ServiceUnavailable(ApiError):
    """Raised when the database cannot be reached; clients should retry."""

    http_status = 503


class BannedPrompt(ApiError):
    """Raised when the prompt holds a banned word (code 24, with promptEn and bannedWord)."""

    code = protocol.CODE_BANNED_PROMPT


class TaskStateConflict(ValidationFailed):
    """Raised when a task is not in a state that allows the request (code 4)."""


class QueueRejected(ApiError):
    """Raised when the pool's queues are full, or a plan's cap is reached (code 23)."""

    code = protocol.CODE_QUEUE_REJECTED


class TooManyRequests(ApiError):
    """Raised when a key exceeds its request rate (HTTP 429 with Retry-After)."""

    http_status = 429


class IdempotencyConflict(ApiError):
    """Raised when an Idempotency-Key is reused with another body (422) or while its first request runs (409)."""

    code = protocol.CODE_VALIDATION_ERROR
    http_status = 422


class IdempotencyInFlight(IdempotencyConflict):
    http_status = 409
