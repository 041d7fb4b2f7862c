"""P1's baseline: a bare Flask app answering the submit path with a constant.

Served by the same gunicorn config as mjq (`gunicorn -c python:config.gunicorn
'bench.baseline_app:create_app()'`), so the difference to P1 is mjq's own work per submit.
"""
from __future__ import annotations

from flask import Flask, Response

ANSWER = b'{"code":1,"description":"Submit success","result":"1","properties":{"discordInstanceId":"sim-1"}}'


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/mj/submit/imagine")
    def imagine() -> Response:
        return Response(ANSWER, mimetype="application/json")

    @app.get("/health")
    def health() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app
