"""API keys: created with a random secret shown once, stored as SHA-256, compared in constant time.

Keys carry 256 random bits, so a fast hash is enough (OWASP API2: no slow KDF is needed for
high-entropy secrets); the `mjq_` prefix lets secret scanners find leaked keys.

Each key also has its own webhook signing secret (workers/webhook_signing.py), made with the key
when the caller has the SecretBox to seal it, else on first use; the key reads and rotates it
(GET/POST /mj/webhook-secret), and the bootstrap secret and open mode get the global one there.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto import SecretBox
from app.errors import NotFound, ValidationFailed
from app.image_modes import RELAY, parse_image_mode
from app.models import now_ms
from app.models_tenancy import ApiKey
from workers.webhook_signing import GLOBAL_SCOPE, add_secret, rotate_secret, stored_secret

KEY_PREFIX = "mjq_"
#: Largest balance or credit in tokens (far below the BIGINT column's limit, so sums cannot overflow).
MAX_TOKENS = 10**15
ROLES = ("admin", "user")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, plan: str, role: str, plans: Mapping[str, object],
               balance: int | None = None, image_mode: str = RELAY, box: SecretBox | None = None
               ) -> tuple[ApiKey, str]:
    """A new key: (row, the key itself). With `box` its webhook secret is made in the same commit
    (sealed when the box has a key); without, on first use. Raises ValidationFailed for an unknown
    plan, role or image mode."""
    if not name or not isinstance(name, str) or len(name) > 128:
        raise ValidationFailed("name is required (at most 128 characters)")
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
    if plan not in plans:
        raise ValidationFailed(f"plan must be one of {', '.join(plans)}")
    if balance is not None and not 0 <= balance <= MAX_TOKENS:
        raise ValidationFailed(f"balance must be a whole number of tokens, 0..{MAX_TOKENS} (omit it for unmetered)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=secrets.token_hex(8), name=name, prefix=key[:8], key_hash=hash_key(key), role=role, plan=plan,
                 balance=balance, image_mode=parse_image_mode("imageMode", image_mode), created_at=now_ms())
    session.add(row)
    if box is not None:
        add_secret(session, row.id, box)
    session.commit()
    return row, key


def get_key(session: Session, key_id: str) -> ApiKey:
    """The key `key_id`, revoked or not. Raises NotFound (code 3)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"key {key_id} not found")
    return row


def set_image_mode(session: Session, key_id: str, image_mode: object) -> ApiKey:
    """Change the image mode a key is shown. Raises NotFound, ValidationFailed naming imageMode."""
    row = get_key(session, key_id)
    row.image_mode = parse_image_mode("imageMode", image_mode)
    session.commit()
    return row


def webhook_secret(session: Session, key_id: str | None, box: SecretBox, configured: str = "") -> str:
    """The `whsec_` secret deliveries of `key_id`'s tasks are signed with; None: the global one
    (`configured` is MJQ_WEBHOOK_SECRET). Made on first use. Raises SecretKeyMissing or
    SecretUnreadable when the stored secret is encrypted and `box` cannot open it."""
    if key_id is None and configured:
        return configured
    return stored_secret(session, key_id or GLOBAL_SCOPE, box)


def rotate_webhook_secret(session: Session, key_id: str | None, box: SecretBox, configured: str = "") -> str:
    """A new secret for `key_id` (None: the global one); the next attempt of every delivery uses it.

    Raises ValidationFailed for the global secret when MJQ_WEBHOOK_SECRET sets it.
    """
    if key_id is None and configured:
        raise ValidationFailed("the global webhook secret is MJQ_WEBHOOK_SECRET: change it in the environment of "
                               "every process")
    return rotate_secret(session, key_id or GLOBAL_SCOPE, box)


def find_key(session: Session, presented: str) -> ApiKey | None:
    """The live key matching `presented`, or None. The final comparison is constant-time."""
    digest = hash_key(presented)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


def revoke_key(session: Session, key_id: str) -> ApiKey:
    row = get_key(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = now_ms()
        session.commit()
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
