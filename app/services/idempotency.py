"""Idempotency-Key on submits: the same key and body give the same answer and no second job.

A reused key with another body is 422; a reuse while the first request still runs is 409
(the IETF draft's codes). Records are kept 24 h (the retention sweep deletes older ones).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.errors import BadRequest, IdempotencyConflict, IdempotencyInFlight
from app.models import now_ms
from app.models_tenancy import IdempotencyRecord

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 255
#: How long a key is remembered, in milliseconds.
KEEP_MS = 24 * 3600 * 1000


def body_hash(path: str, body: bytes) -> str:
    return hashlib.sha256(path.encode() + b"\n" + body).hexdigest()


def run_once(session: Session, owner: str, key: str, digest: str, run: Callable[[], dict[str, Any]]
             ) -> dict[str, Any]:
    """The answer of `run`, computed at most once per (owner, key). Raises the conflicts above."""
    if not key or len(key) > MAX_KEY_CHARS:
        raise BadRequest(f"Idempotency-Key must be 1..{MAX_KEY_CHARS} characters")
    session.add(IdempotencyRecord(owner=owner, key=key, body_hash=digest, status="pending", response=None,
                                  created_at=now_ms()))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        record = session.get(IdempotencyRecord, (owner, key), populate_existing=True)
        if record is None:  # deleted in between (the first request failed): the caller may retry
            raise IdempotencyInFlight("the first request with this Idempotency-Key just failed; retry") from None
        if record.body_hash != digest:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request body") from None
        if record.status != "done" or record.response is None:
            raise IdempotencyInFlight("a request with this Idempotency-Key is still being processed") from None
        return dict(record.response)
    try:
        answer = run()
    except BaseException:
        # Neither a refused request (fix the input and retry) nor a failed one (HTTP 500) is
        # remembered: a pending record would answer every retry 409 until it expires.
        _forget(session, owner, key)
        raise
    record = session.get(IdempotencyRecord, (owner, key))
    if record is not None:
        record.status, record.response = "done", answer
        session.commit()
    return answer


def _forget(session: Session, owner: str, key: str) -> None:
    """Delete the pending record of a request that did not complete. A database that fails here too
    (the request's own failure may be the database) leaves it pending until it expires."""
    try:
        session.rollback()
        session.query(IdempotencyRecord).filter_by(owner=owner, key=key, status="pending").delete()
        session.commit()
    except SQLAlchemyError as exc:
        log.warning("Idempotency-Key %r of %s stays pending after a failed request: %s", key, owner, exc)
        session.rollback()
