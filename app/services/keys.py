"""API keys: created with a random secret shown once, stored as SHA-256, compared in constant time.

Keys carry 256 random bits, so a fast hash is enough (OWASP API2: no slow KDF is needed for
high-entropy secrets); the `mjq_` prefix lets secret scanners find leaked keys.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound, ValidationFailed
from app.models import now_ms
from app.models_tenancy import ApiKey

KEY_PREFIX = "mjq_"
ROLES = ("admin", "user")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, plan: str, role: str, plans: Mapping[str, object],
               balance: int | None = None) -> tuple[ApiKey, str]:
    """A new key: (row, the key itself). Raises ValidationFailed for an unknown plan or role."""
    if not name or not isinstance(name, str) or len(name) > 128:
        raise ValidationFailed("name is required (at most 128 characters)")
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
    if plan not in plans:
        raise ValidationFailed(f"plan must be one of {', '.join(plans)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=secrets.token_hex(8), name=name, prefix=key[:8], key_hash=hash_key(key), role=role, plan=plan,
                 balance=balance, created_at=now_ms())
    session.add(row)
    session.commit()
    return row, key


def find_key(session: Session, presented: str) -> ApiKey | None:
    """The live key matching `presented`, or None. The final comparison is constant-time."""
    digest = hash_key(presented)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


def revoke_key(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"key {key_id} not found")
    if row.revoked_at is None:
        row.revoked_at = now_ms()
        session.commit()
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
