"""JSON responses in the protocol's compact form."""
from __future__ import annotations

from typing import Any

from flask import Response

from app import protocol


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(protocol.dumps(value), status=status, mimetype="application/json", headers=headers)
