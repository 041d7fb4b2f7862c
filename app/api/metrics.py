"""`GET /metrics`: Prometheus text format, open unless MJQ_METRICS_TOKEN is set.

A fresh registry per scrape holds one MjqCollector (app/metrics.py) reading the database and
Redis, so every gunicorn worker answers with the same cluster-wide figures.
"""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.api import services
from app.db import db
from app.errors import Unauthorized
from app.metrics import MjqCollector

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    token = services().settings.metrics_token
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.encode()):
            raise Unauthorized("GET /metrics needs Authorization: Bearer <MJQ_METRICS_TOKEN>")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MjqCollector(db.session(), services().redis))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
