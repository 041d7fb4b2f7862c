"""Who is calling: the bootstrap secret (admin), an API key (admin or user), or nobody (dev mode).

`MJQ_API_SECRET` keeps midjourney-proxy's single-secret mode and is the bootstrap admin.
With it unset, mjq runs open (the embedded default): anyone is admin, but a presented API
key is still honoured, so per-key scoping can be tried locally.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from flask import current_app, g, request

from app.db import db
from app.errors import ApiError, Unauthorized
from app.services.keys import find_key
from app.services.tenancy import REQUESTS, check_rate


class Forbidden(ApiError):
    """Raised when a user key calls an admin endpoint."""

    http_status = 403


@dataclass(frozen=True)
class Caller:
    key_id: str | None     # None: the bootstrap secret, or dev mode
    role: str              # admin | user
    plan: str | None
    balance: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def viewer(self) -> str | None:
        """Whose tasks this caller sees: None = every task (admins)."""
        return None if self.is_admin else self.key_id


BOOTSTRAP = Caller(key_id=None, role="admin", plan=None)


def presented_secret() -> str | None:
    header = request.headers.get("mj-api-secret")
    if header:
        return header.strip()
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return auth.strip() or None  # some clients send the raw token


def authenticate(api_secret: str) -> Caller:
    """The caller of this request, counted against its key's request rate.

    Raises Unauthorized (401), TooManyRequests (429).
    """
    given = presented_secret()
    if given and api_secret and hmac.compare_digest(given.encode(), api_secret.encode()):
        return BOOTSTRAP
    if given:
        key = find_key(db.session(), given)
        if key is not None:
            who = Caller(key_id=key.id, role=key.role, plan=key.plan, balance=key.balance)
            limit_requests(who)
            return who
    if not api_secret:
        return BOOTSTRAP  # open mode: no secret configured, unknown credentials are not refused
    raise Unauthorized("missing or wrong API key: send header mj-api-secret or Authorization: Bearer")


def limit_requests(who: Caller) -> None:
    """Count a user key's request against its plan's requestsPerMinute, shared by every API process
    through Redis. Admins (the bootstrap secret, admin keys) are not limited. Raises TooManyRequests (429)."""
    if who.key_id is None or who.is_admin:
        return
    svc = current_app.extensions["mjq"]  # app.api.services() would import this module back
    plan = svc.plans.get(who.plan or "")
    if plan is not None and plan.requests_per_minute is not None:
        check_rate(svc.redis, who.key_id, plan.requests_per_minute, REQUESTS)


def caller() -> Caller:
    return g.get("caller", BOOTSTRAP)


def require_admin() -> Caller:
    """The caller, when it is an admin. Raises Forbidden (403) for user keys."""
    who = caller()
    if not who.is_admin:
        raise Forbidden("this endpoint needs an admin key")
    return who
