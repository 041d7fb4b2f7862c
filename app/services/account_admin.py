"""Account administration, shared by the admin API (`/mj/account/*`) and the CLI (`mjq accounts`).

Validation names the field of every failure (code 4). Settings are split on the way in:
the secret ones (a Discord token, an upstream proxy's key) leave `settings` and are kept
encrypted, one Fernet token per secret, in the `secrets` column; nothing that answers a
request ever decrypts them. Workers read them with `account_secrets`.
"""
from __future__ import annotations

import json
import re
import secrets as random_tokens
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import protocol
from app.crypto import SecretBox, SecretKeyMissing, SecretUnreadable
from app.errors import ApiError, NotFound, ValidationFailed
from app.models import Account, Task, now_ms
from app.schemas import MAX_URL_CHARS

DRIVERS = ("simulator", "mjproxy", "discord")
MODES = ("FAST", "TURBO", "RELAX")
#: Inclusive bounds of the numeric fields. Midjourney itself runs at most 12 fast jobs at once
#: (Pro and Mega plans, 3 on Basic/Standard); up to 100 leaves room for an upstream proxy
#: that pools several accounts behind one URL.
BOUNDS = {"fastConcurrency": (1, 100), "relaxConcurrency": (0, 100), "queueSize": (0, 10_000),
          "weight": (0, 1000), "timeoutMinutes": (1, 120)}
#: JSON field -> column, for the fields a create or update may set.
COLUMNS = {"name": "name", "driver": "driver", "modes": "modes", "fastConcurrency": "fast_concurrency",
           "relaxConcurrency": "relax_concurrency", "queueSize": "queue_size", "weight": "weight", "remix": "remix",
           "botTypes": "bot_types", "timeoutMinutes": "timeout_minutes", "enable": "enable",
           "disabledReason": "disabled_reason"}
#: What a new account gets for a field the request leaves out.
DEFAULTS: dict[str, Any] = {"modes": list(MODES), "fastConcurrency": 3, "relaxConcurrency": 3, "queueSize": 10,
                            "weight": 1, "remix": False, "botTypes": list(protocol.BOT_TYPES), "timeoutMinutes": 5,
                            "enable": True, "disabledReason": None}
#: Fields of the account JSON that are shown but never set: a fetched account can be sent back as is.
READ_ONLY = frozenset({"id", "health", "secretsSet", "createdAt", "updatedAt"})
MAX_NAME_CHARS = 128
MAX_REASON_CHARS = 1000
MAX_SECRET_CHARS = 4096
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SNOWFLAKE_RE = re.compile(r"^[0-9]{1,32}$")


class AccountNotFound(NotFound):
    """Raised for an unknown account id: HTTP 404 with a code-3 body, like an unknown task."""

    http_status = 404


class SecretsUnavailable(ApiError):
    """Raised when a secret must be stored but MJQ_SECRET_KEY is not set (code 9: the server's configuration)."""


def _http_url(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        raise ValidationFailed(f"{name} must be an http(s) URL of at most {MAX_URL_CHARS} characters")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(f"{name} must be an http(s) URL, got {value!r}")
    return value.strip().rstrip("/")


def _snowflake(name: str, value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _SNOWFLAKE_RE.match(text.strip()):
        raise ValidationFailed(f"{name} must be a Discord id (digits only)")
    return text.strip()


def _secret_text(name: str, value: Any) -> str:
    # The value is never echoed: error messages may end up in logs.
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_SECRET_CHARS:
        raise ValidationFailed(f"{name} must be a non-empty string of at most {MAX_SECRET_CHARS} characters")
    return value.strip()


def _user_agent(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 512:
        raise ValidationFailed(f"{name} must be a string of at most 512 characters")
    return value.strip()


@dataclass(frozen=True)
class SettingSpec:
    parse: Callable[[str, Any], str]
    required: bool = False
    secret: bool = False


#: The settings each driver takes: the one table of which are required and which are secret
#: (secret ones are encrypted at rest, never returned, and read by workers via `account_secrets`).
DRIVER_SETTINGS: dict[str, dict[str, SettingSpec]] = {
    "simulator": {},
    "mjproxy": {"baseUrl": SettingSpec(_http_url, required=True), "secret": SettingSpec(_secret_text, secret=True)},
    "discord": {"guildId": SettingSpec(_snowflake, required=True), "channelId": SettingSpec(_snowflake, required=True),
                "userToken": SettingSpec(_secret_text, required=True, secret=True),
                "userAgent": SettingSpec(_user_agent)},
}
#: Other names accepted for a setting (midjourney-proxy configs call the Discord token `token`).
SETTING_ALIASES: dict[str, dict[str, str]] = {"discord": {"token": "userToken"}}


def _int(body: dict[str, Any], key: str) -> int:
    lo, hi = BOUNDS[key]
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationFailed(f"{key} must be a whole number {lo}..{hi}, got {value!r}")
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    if not isinstance(body[key], bool):
        raise ValidationFailed(f"{key} must be true or false, got {body[key]!r}")
    return bool(body[key])


def _choices(body: dict[str, Any], key: str, allowed: tuple[str, ...], aliases: dict[str, str] | None = None
             ) -> list[str]:
    value = body[key]
    wanted = f"{key} must be a non-empty list of {', '.join(allowed)}"
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationFailed(f"{wanted}, got {value!r}")
    picked = {(aliases or {}).get(v.strip().upper(), v.strip().upper()) for v in value}
    if not picked <= set(allowed):
        raise ValidationFailed(f"{wanted}, got {value!r}")
    return [a for a in allowed if a in picked]


def _text(body: dict[str, Any], key: str, max_chars: int, required: bool) -> str | None:
    value = body[key]
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_chars:
        raise ValidationFailed(f"{key} must be a {'non-empty ' if required else ''}string of at most {max_chars} "
                               "characters")
    return value.strip() or None


_PARSERS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "name": lambda body, key: _text(body, key, MAX_NAME_CHARS, required=True),
    "driver": lambda body, key: _driver(body[key]),
    "modes": lambda body, key: _choices(body, key, MODES),
    "botTypes": lambda body, key: _choices(body, key, protocol.BOT_TYPES, protocol.BOT_TYPE_ALIASES),
    "remix": _bool, "enable": _bool,
    "disabledReason": lambda body, key: _text(body, key, MAX_REASON_CHARS, required=False),
    **{key: _int for key in BOUNDS},
}


def _driver(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in DRIVERS:
        raise ValidationFailed(f"driver must be one of {', '.join(DRIVERS)}, got {value!r}")
    return value.strip().lower()


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The settable fields present in `body`, parsed. Raises ValidationFailed naming the field."""
    unknown = sorted(set(body) - set(COLUMNS) - READ_ONLY - {"settings"})
    if unknown:
        raise ValidationFailed(f"unknown field {unknown[0]}; accounts take {', '.join(COLUMNS)}, settings")
    return {key: _PARSERS[key](body, key) for key in COLUMNS if key in body}


def _stored_secrets(account: Account) -> dict[str, str]:
    return dict(json.loads(account.secrets)) if account.secrets else {}


def _apply_settings(account: Account, driver: str, patch: Any, box: SecretBox, fresh: bool) -> None:
    """Merge `patch` into the account's settings key by key (null removes one); secrets go encrypted to `secrets`.

    `fresh` starts from nothing (a new account, or a changed driver, whose old settings mean nothing now).
    """
    if patch is not None and not isinstance(patch, dict):
        raise ValidationFailed("settings must be an object")
    specs, aliases = DRIVER_SETTINGS[driver], SETTING_ALIASES.get(driver, {})
    plain = {} if fresh else dict(account.settings or {})
    hidden = {} if fresh else _stored_secrets(account)
    named: dict[str, str] = {}
    for raw_key, value in (patch or {}).items():
        key = aliases.get(str(raw_key), str(raw_key))
        if key in named:
            raise ValidationFailed(f"settings.{named[key]} and settings.{raw_key} are the same setting; send one")
        named[key] = raw_key
        spec = specs.get(key)
        if spec is None:
            known = ", ".join([*specs, *aliases]) or "none"
            raise ValidationFailed(f"settings.{raw_key} is not a setting of driver {driver} (it takes: {known})")
        target = hidden if spec.secret else plain
        if value is None:
            target.pop(key, None)
            continue
        parsed = spec.parse(f"settings.{raw_key}", value)
        if spec.secret:
            try:
                target[key] = box.encrypt(parsed)
            except SecretKeyMissing as exc:
                raise SecretsUnavailable(str(exc)) from None
        else:
            target[key] = parsed
    for key, spec in specs.items():
        if spec.required and key not in plain and key not in hidden:
            raise ValidationFailed(f"settings.{key} is required for driver {driver}")
    account.settings = plain
    account.secrets = json.dumps(hidden, sort_keys=True) if hidden else None


def _check(account: Account) -> None:
    if account.enable:
        account.disabled_reason = None  # a reason only explains a disabled account
    if "RELAX" in account.modes and account.relax_concurrency < 1:
        raise ValidationFailed("relaxConcurrency must be at least 1 when modes include RELAX")


def _assign(account: Account, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(account, COLUMNS[key], value)


def create_account(session: Session, body: dict[str, Any], box: SecretBox) -> Account:
    """Validate `body` (the account JSON), store the account, commit. Raises ValidationFailed (code 4)."""
    values = _fields(body)
    for key in ("name", "driver"):
        if key not in values:
            raise ValidationFailed(f"{key} is required")
    account_id = _new_id(session, body.get("id"), values["driver"])
    now = now_ms()
    account = Account(id=account_id, created_at=now, updated_at=now)
    _assign(account, {**DEFAULTS, **values})
    _apply_settings(account, account.driver, body.get("settings"), box, fresh=True)
    _check(account)
    session.add(account)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ValidationFailed(f"id {account_id} is taken by another account") from None
    return account


def _new_id(session: Session, given: Any, driver: str) -> str:
    if given is None or given == "":
        while True:
            candidate = f"{driver}-{random_tokens.token_hex(4)}"
            if session.get(Account, candidate) is None:
                return candidate
    if not isinstance(given, str) or not _ID_RE.match(given):
        raise ValidationFailed("id must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
    if session.get(Account, given) is not None:
        raise ValidationFailed(f"id {given} is taken by another account")
    return given


def get_account(session: Session, account_id: str) -> Account:
    """The account. Raises AccountNotFound (HTTP 404, code 3)."""
    account = session.get(Account, account_id)
    if account is None:
        raise AccountNotFound(f"account {account_id} not found")
    return account


def update_account(session: Session, account_id: str, body: dict[str, Any], box: SecretBox) -> Account:
    """Change the fields present in `body`; `settings` merges key by key, so secrets the caller never saw stay.

    Raises AccountNotFound, ValidationFailed.
    """
    account = get_account(session, account_id)
    if body.get("id") not in (None, account_id):
        raise ValidationFailed(f"id cannot change (the account is {account_id})")
    values = _fields(body)
    driver_changed = values.get("driver", account.driver) != account.driver
    _assign(account, values)
    _apply_settings(account, account.driver, body.get("settings"), box, fresh=driver_changed)
    _check(account)
    account.updated_at = now_ms()
    session.commit()
    return account


def set_enabled(session: Session, account_id: str, enable: bool, reason: str | None = None) -> Account:
    """Enable (clearing the reason) or disable (recording `reason`). Waiting jobs stay; the executor fails
    them with "account X is not available" when they come up. Raises AccountNotFound, ValidationFailed."""
    account = get_account(session, account_id)
    account.enable = enable
    account.disabled_reason = None if enable else _text({"reason": reason}, "reason", MAX_REASON_CHARS, False)
    account.updated_at = now_ms()
    session.commit()
    return account


def open_task_count(session: Session, account_id: str) -> int:
    """Tasks of the account that may still run: waiting, running, or in a modal."""
    statuses = [*protocol.OPEN_STATUSES, protocol.MODAL]
    return int(session.scalar(select(func.count()).select_from(Task)
                              .where(Task.account_id == account_id, Task.status.in_(statuses))) or 0)


def delete_account(session: Session, account_id: str) -> dict[str, Any]:
    """Delete an account with no open task; returns its JSON as it was.

    Raises AccountNotFound, ValidationFailed naming how many open tasks it has.
    """
    account = get_account(session, account_id)
    count = open_task_count(session, account_id)
    if count:
        raise ValidationFailed(f"account {account_id} has {count} open task{'s' if count != 1 else ''} "
                               "(waiting, running or in a modal); disable it, and delete it once they finish")
    gone = account.to_json()
    session.delete(account)
    session.commit()
    return gone


def list_accounts(session: Session, offset: int = 0, limit: int | None = None) -> tuple[list[Account], int]:
    """(accounts ordered by id from `offset`, at most `limit`; how many there are in all)."""
    query = select(Account).order_by(Account.id).offset(offset)
    rows = list(session.scalars(query if limit is None else query.limit(limit)))
    return rows, int(session.scalar(select(func.count()).select_from(Account)) or 0)


def account_secrets(account: Account, box: SecretBox) -> dict[str, str]:
    """The account's decrypted secrets by setting name (for drivers only, never for an answer).

    Raises SecretKeyMissing without MJQ_SECRET_KEY, SecretUnreadable when they were encrypted with another key.
    """
    try:
        return {key: box.decrypt(token) for key, token in _stored_secrets(account).items()}
    except SecretUnreadable as exc:
        raise SecretUnreadable(f"account {account.id}: {exc}") from None
