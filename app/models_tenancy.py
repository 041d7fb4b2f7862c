"""Tenancy tables: API keys, the billing ledger, idempotency records."""
from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models import JsonType


class ApiKey(Base):
    """A caller. Only the SHA-256 of the key is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart in lists
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(8))      # admin | user
    plan: Mapped[str] = mapped_column(String(32))
    balance: Mapped[int | None] = mapped_column(BigInteger)  # tokens; None = not metered
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    # The image URL form this key is shown on the plain mounts (app/image_modes.py): origin | relay | proxy.
    image_mode: Mapped[str] = mapped_column(String(8), default="relay", server_default="relay")

    def to_json(self) -> dict[str, Any]:
        """The key as lists show it: never the key itself, nor its webhook secret."""
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "role": self.role, "plan": self.plan,
                "balance": self.balance, "imageMode": self.image_mode, "createdAt": self.created_at,
                "revokedAt": self.revoked_at}


class LedgerEntry(Base):
    """One movement of a key's balance. A task is charged at most once (unique task_id per kind)."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))     # charge | credit
    task_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str | None] = mapped_column(String(32))
    mode: Mapped[str | None] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)   # tokens; negative for charges
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("kind", "task_id", name="uq_ledger_kind_task"),
        Index("ix_ledger_key_created", "key_id", "created_at"),
    )


class IdempotencyRecord(Base):
    """A submit made with an Idempotency-Key: the body's hash and, once done, the answer to replay."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(32), primary_key=True)  # key id, or "-" without tenancy
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(8))    # pending | done
    response: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    created_at: Mapped[int] = mapped_column(BigInteger)
