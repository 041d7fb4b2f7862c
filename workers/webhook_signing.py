"""Standard Webhooks signatures and the secrets that make them.

Every POST carries `webhook-id` (the event's id, the same at every retry), `webhook-timestamp`
(epoch seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`, keyed with the base64-decoded part of a `whsec_…` secret. The
formula is the specification's three lines; the tests verify it with the PyPI
`standardwebhooks` library receivers use, which keeps this side honest.

Which secret: MJQ_WEBHOOK_SECRET when set; otherwise one generated once and kept in the
`webhook_secrets` table (scope "global"), so every worker on every host signs with the same
key and `mjq webhook-secret` can show it. Per-API-key secrets arrive with tenancy: a row per
key id in the same table, looked up by the task's owner in `SecretSource.key_for`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.models import WebhookSecret, now_ms
from config.settings import WEBHOOK_SECRET_PREFIX, decode_webhook_secret

#: Scope of the secret used for every task until API keys have their own.
GLOBAL_SCOPE = "global"
#: Random bytes in a generated secret (Standard Webhooks asks for 24-64).
GENERATED_SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh `whsec_…` secret."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode()


def sign(key: bytes, event_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` value for one attempt: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`."""
    digest = hmac.new(key, f"{event_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, event_id: str, timestamp_s: int, body: bytes, seq: int) -> dict[str, str]:
    """Every header of a webhook POST: JSON, the three Standard Webhooks headers and the event's sequence."""
    return {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": sign(key, event_id, timestamp_s, body),
        # The task's event sequence: a receiver keeps the highest it has seen and ignores older ones.
        "webhook-sequence": str(seq),
    }


def stored_secret(session: Session, scope: str = GLOBAL_SCOPE) -> str:
    """The secret kept for `scope`, created on first use (concurrent first uses agree on one)."""
    row = session.get(WebhookSecret, scope)
    if row is not None:
        return row.secret
    try:
        session.add(WebhookSecret(scope=scope, secret=new_secret(), created_at=now_ms()))
        session.commit()
    except IntegrityError:
        session.rollback()  # another process created it first: use theirs
    row = session.get(WebhookSecret, scope, populate_existing=True)
    assert row is not None
    return row.secret


class SecretSource:
    """Finds the signing key of a delivery. Keys are cached: a secret never changes under a process."""

    def __init__(self, session_factory: sessionmaker, configured: str = "") -> None:
        self.session_factory = session_factory
        self.configured = configured
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def key_for(self, owner: str | None) -> bytes:
        """The HMAC key for a task of `owner` (the API key's id once tenancy exists; unused today)."""
        with self._lock:
            key = self._cache.get(GLOBAL_SCOPE)
            if key is None:
                if self.configured:
                    secret = self.configured
                else:
                    with self.session_factory() as session:
                        secret = stored_secret(session)
                key = self._cache[GLOBAL_SCOPE] = decode_webhook_secret(secret)
            return key
