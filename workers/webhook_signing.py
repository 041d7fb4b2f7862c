"""Standard Webhooks signatures and the secrets that make them.

Every POST carries `webhook-id` (the event's id, the same at every retry), `webhook-timestamp`
(epoch seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`, keyed with the base64-decoded part of a `whsec_…` secret. The
formula is the specification's three lines; the tests verify it with the PyPI
`standardwebhooks` library receivers use, which keeps this side honest.

Which secret: a task owned by an API key is signed with that key's own secret, a row of
`webhook_secrets` with the key's id as scope, made when the key is (or on first use for keys
older than that) and kept as a Fernet token when MJQ_SECRET_KEY is set. Other tasks (the
bootstrap secret, open mode) use the global one: MJQ_WEBHOOK_SECRET when set, otherwise one
generated once and kept in the same table (scope "global", as it always was: `mjq
webhook-secret` prints it without a key), so every worker on every host signs alike.

A rotation replaces the row. The claim of each attempt reads the row with it (workers/webhooks.py),
so the next attempt, a retry of an older event included, is signed with the new secret; nothing
caches a stored secret.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.crypto import SECRET_KEY_ENV, SecretBox, SecretKeyMissing
from app.models import WebhookSecret, now_ms
from config import Settings
from config.settings import WEBHOOK_SECRET_PREFIX, decode_webhook_secret

#: Scope of the secret of tasks no API key owns (the bootstrap secret, open mode).
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


def scope_of(owner: str | None) -> str:
    """The `webhook_secrets` scope of a task's owner: the API key's id, or "global"."""
    return owner or GLOBAL_SCOPE


def _seal(scope: str, secret: str, box: SecretBox | None) -> str:
    # A key's secret is encrypted whenever there is a key to do it with; the global one is kept as it
    # always was (plaintext: `mjq webhook-secret` and older hosts read it without MJQ_SECRET_KEY).
    if scope != GLOBAL_SCOPE and box is not None and box.has_key:
        return box.encrypt(secret)
    return secret


def reveal(stored: str, box: SecretBox | None) -> str:
    """The `whsec_…` secret of a `webhook_secrets` value (a Fernet token is decrypted with `box`).

    Raises:
        SecretKeyMissing: the value is encrypted and `box` has no key.
        SecretUnreadable: the value does not decrypt with the box's key.
    """
    if stored.startswith(WEBHOOK_SECRET_PREFIX):
        return stored
    if box is None or not box.has_key:
        raise SecretKeyMissing(f"{SECRET_KEY_ENV} is not set in this process, and the API key's webhook secret is "
                               "stored encrypted with it")
    return box.decrypt(stored)


def stored_secret(session: Session, scope: str = GLOBAL_SCOPE, box: SecretBox | None = None) -> str:
    """The secret kept for `scope`, created on first use (concurrent first uses agree on one).

    Raises SecretKeyMissing or SecretUnreadable as `reveal` does.
    """
    row = session.get(WebhookSecret, scope)
    if row is not None:
        return reveal(row.secret, box)
    try:
        session.add(WebhookSecret(scope=scope, secret=_seal(scope, new_secret(), box), created_at=now_ms()))
        session.commit()
    except IntegrityError:
        session.rollback()  # another process created it first: use theirs
    row = session.get(WebhookSecret, scope, populate_existing=True)
    assert row is not None
    return reveal(row.secret, box)


def add_secret(session: Session, scope: str, box: SecretBox | None) -> None:
    """Add a new secret for a new `scope` to the caller's transaction (an API key being created)."""
    session.add(WebhookSecret(scope=scope, secret=_seal(scope, new_secret(), box), created_at=now_ms()))


def rotate_secret(session: Session, scope: str, box: SecretBox | None) -> str:
    """Replace the secret of `scope` with a new one and commit; returns it. Attempts from now on use it.

    The old value is never read, so a secret that no longer decrypts can be replaced.
    """
    secret = new_secret()
    values = {"secret": _seal(scope, secret, box), "created_at": now_ms()}
    replace = update(WebhookSecret).where(WebhookSecret.scope == scope).values(**values)
    replaced: Any = session.execute(replace.execution_options(synchronize_session=False))
    if replaced.rowcount == 0:  # a key older than its secrets has none yet
        try:
            session.add(WebhookSecret(scope=scope, **values))
            session.flush()
        except IntegrityError:
            session.rollback()  # made by a delivery at the same moment: replace that one
            session.execute(replace.execution_options(synchronize_session=False))
    session.commit()
    return secret


class SecretSource:
    """Finds the signing key of an attempt: the task owner's secret, or the global one.

    `box` opens API keys' encrypted secrets and seals the ones made here; None builds the box of
    MJQ_SECRET_KEY as this process's environment has it, once, when first needed.
    """

    def __init__(self, session_factory: sessionmaker, configured: str = "", box: SecretBox | None = None) -> None:
        self.session_factory = session_factory
        self.configured = configured
        self._box = box
        self._lock = threading.Lock()

    @property
    def box(self) -> SecretBox:
        with self._lock:
            if self._box is None:
                self._box = SecretBox.from_settings(Settings.from_env())
            return self._box

    def key_for(self, owner: str | None, stored: str | None = None) -> bytes:
        """The HMAC key for an attempt on a task of `owner` (an API key's id; None: no key owns it).

        `stored`: the scope's `webhook_secrets` value when the caller read it already (the claim
        does); None reads it, creating it on first use.

        Raises:
            SecretKeyMissing, SecretUnreadable: the key's secret is encrypted and this process cannot open it.
            ValueError: the stored value is not a `whsec_` secret.
        """
        if owner is None and self.configured:
            return decode_webhook_secret(self.configured)
        box = self.box if owner is not None else None
        if stored is None:
            with self.session_factory() as session:
                return decode_webhook_secret(stored_secret(session, scope_of(owner), box))
        return decode_webhook_secret(reveal(stored, box))
