"""Tables. Schema changes go through migrations/ (Alembic), identical on PostgreSQL and SQLite."""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.protocol import TASK_KEYS

JsonType = JSON().with_variant(JSONB(), "postgresql")


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (the protocol's unit for times)."""
    return time.time_ns() // 1_000_000


def new_task_id() -> int:
    """A 19-digit id: epoch milliseconds then 6 random digits, so ids sort by submit time.

    midjourney-proxy uses millis + 3 random digits (16 digits); six digits make a collision
    within one millisecond negligible, and the primary key catches the rest.
    """
    return now_ms() * 1_000_000 + secrets.randbelow(1_000_000)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str | None] = mapped_column(Text)
    prompt_en: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(Text)
    submit_time: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[int | None] = mapped_column(BigInteger)
    finish_time: Mapped[int | None] = mapped_column(BigInteger)
    image_url: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[str | None] = mapped_column(String(16))
    fail_reason: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    buttons: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)

    # What mjq needs internally.
    mode: Mapped[str] = mapped_column(String(8))
    queue: Mapped[str] = mapped_column(String(32))
    bot_type: Mapped[str] = mapped_column(String(16), default="MID_JOURNEY")
    account_id: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(BigInteger)
    notify_hook: Mapped[str | None] = mapped_column(Text)
    # The image URL mode the task was submitted with (app/image_modes.py), for its webhook bodies; None = relay.
    image_mode: Mapped[str | None] = mapped_column(String(8))
    # Request inputs the worker needs (data URLs are stored as image keys, not inline).
    inputs: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    # Fencing: every claim by a worker bumps `attempt`; writes carry the attempt they hold.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Monotonic event sequence: +1 on every transition, sent with every event.
    seq: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    # Upstream submission record: set before the upstream call, confirmed after it.
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    upstream_state: Mapped[str | None] = mapped_column(String(16))
    enqueued_at: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_tasks_status_submit_time", "status", "submit_time"),
        Index("ix_tasks_owner_id", "owner", "id"),
        Index("ix_tasks_owner_status", "owner", "status"),
    )

    def to_json(self) -> dict[str, Any]:
        """The task object exactly as midjourney-proxy clients read it (every key present)."""
        return task_json_of_row(tuple(getattr(self, name) for name in TASK_JSON_COLUMNS))


#: The tasks table, for Core statements that skip the ORM's bookkeeping on hot paths (submit, transitions).
TASKS = cast(Table, Task.__table__)

#: The columns a task object is made of, in TASK_KEYS order (attribute and column names are the same).
TASK_JSON_COLUMNS = (
    "id", "action", "status", "prompt", "prompt_en", "description", "state", "submit_time",
    "start_time", "finish_time", "image_url", "progress", "fail_reason", "properties", "buttons",
)


def task_json_of_row(values: Sequence[Any]) -> dict[str, Any]:
    """The task object from its TASK_JSON_COLUMNS values in that order: a Task's, or a row selected by them.

    Readers that answer many tasks select these columns as plain rows: building Task instances (and
    decoding the unused `inputs` JSON) cost more than the query itself (bench P5).
    """
    data = dict(zip(TASK_KEYS, values, strict=True))
    # Assigning existing keys keeps their place, so the order stays TASK_KEYS.
    data["id"] = str(data["id"])
    data["properties"] = dict(data["properties"] or {})
    data["buttons"] = list(data["buttons"] or [])
    return data


class Account(Base):
    """An upstream account: a Discord user, an upstream midjourney-proxy, or the simulator."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    driver: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    modes: Mapped[list[str]] = mapped_column(JsonType, default=list)
    fast_concurrency: Mapped[int] = mapped_column(Integer, default=3)
    relax_concurrency: Mapped[int] = mapped_column(Integer, default=3)
    queue_size: Mapped[int] = mapped_column(Integer, default=10)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    remix: Mapped[bool] = mapped_column(Boolean, default=False)
    bot_types: Mapped[list[str]] = mapped_column(JsonType, default=list)
    timeout_minutes: Mapped[int] = mapped_column(Integer, default=5)
    enable: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Driver secrets (Discord token, upstream key), encrypted with MJQ_SECRET_KEY; never returned.
    secrets: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)

    def to_json(self) -> dict[str, Any]:
        """The account as the admin API shows it. Secret settings never reach `settings` (the admin service
        keeps them encrypted in `secrets`); `secretsSet` names the ones stored, never their values."""
        return {
            "id": self.id, "name": self.name, "driver": self.driver, "settings": dict(self.settings or {}),
            "secretsSet": sorted(json.loads(self.secrets)) if self.secrets else [],
            "modes": list(self.modes or []), "fastConcurrency": self.fast_concurrency,
            "relaxConcurrency": self.relax_concurrency, "queueSize": self.queue_size, "weight": self.weight,
            "remix": self.remix, "botTypes": list(self.bot_types or []), "timeoutMinutes": self.timeout_minutes,
            "enable": self.enable, "disabledReason": self.disabled_reason, "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


class AccountVersion(Base):
    """One row (`id` 1) whose `version` a trigger on `accounts` bumps at every write to that table (migration
    0005): every writer, SQL typed by an operator included. The API caches the enabled accounts per process and
    checks this version in the same statement that inserts a new task (app/services/accounts.py)."""

    __tablename__ = "account_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


#: The account_versions table, for the scalar subquery the task INSERT returns.
ACCOUNT_VERSIONS = cast(Table, AccountVersion.__table__)
#: The accounts table, for the Core read behind the API's cache of accounts (plain rows, no session state).
ACCOUNTS = cast(Table, Account.__table__)


# Webhook delivery (workers/webhooks.py). Deliveries are written in the same transaction as
# the task transition they announce, so no event is lost between the commit and a send.
AutoId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY


class WebhookDelivery(Base):
    """One event of a task to be POSTed to its hook, and where its delivery stands."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(Integer)
    # `webhook-id`: stable across every attempt of this event.
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    # sha256 hex of the URL: indexable whatever the URL's length (disabled endpoints key on it).
    endpoint: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    task_status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the event first became due (progress events of a task are spaced by this).
    due_at: Mapped[int] = mapped_column(BigInteger)
    next_attempt_at: Mapped[int | None] = mapped_column(BigInteger)
    # Pending: a deliver message is on its way until then; delivering: the attempt's lease.
    locked_until: Mapped[int] = mapped_column(BigInteger, default=0)
    last_attempt_at: Mapped[int | None] = mapped_column(BigInteger)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_webhook_deliveries_task_seq", "task_id", "seq"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_status", "endpoint", "status"),
    )


class WebhookAttempt(Base):
    """One POST of a delivery: when, how long, what came back."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger, index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))


class WebhookDisabledEndpoint(Base):
    """A webhook URL that answered 410 Gone: nothing more is sent to it until a redelivery re-enables it."""

    __tablename__ = "webhook_disabled_endpoints"

    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    disabled_at: Mapped[int] = mapped_column(BigInteger)


class WebhookSecret(Base):
    """A signing secret by scope: "global", or an API key's id (workers/webhook_signing.py).

    `secret` is the `whsec_…` value, or for an API key's secret a Fernet token of it when
    MJQ_SECRET_KEY is set."""

    __tablename__ = "webhook_secrets"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
