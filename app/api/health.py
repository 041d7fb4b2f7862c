"""`/health` (the process is up) and `/ready` (it can reach the database and Redis)."""
from __future__ import annotations

from flask import Blueprint, Response
from sqlalchemy import text

from app.api import services
from app.api.responses import json_response
from app.db import db

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    return json_response({"status": "ok"})


@bp.get("/ready")
def ready() -> Response:
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
        db.session.rollback()
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        services().redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return json_response({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)
