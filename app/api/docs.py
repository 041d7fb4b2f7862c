"""`/openapi.json` (the API described, app/openapi.py) and `/docs` (Swagger UI).

Swagger UI's files come from the `swagger-ui-bundle` package and are served by mjq under
`/docs/static/`: the page loads nothing from another host, and the online spec validator
Swagger UI would call by default is switched off.
"""
from __future__ import annotations

from flask import Blueprint, Response, render_template_string, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from app.api import services
from app.api.responses import json_response
from app.openapi import build_document

bp = Blueprint("docs", __name__)

#: Swagger UI's files may be cached a day; they change only when the package is upgraded.
STATIC_MAX_AGE_SECONDS = 86_400

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>mjq API</title>
  <link rel="stylesheet" href="{{ url_for('docs.static_file', filename='swagger-ui.css') }}">
  <link rel="icon" type="image/png" href="{{ url_for('docs.static_file', filename='favicon-32x32.png') }}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ url_for('docs.static_file', filename='swagger-ui-bundle.js') }}"></script>
  <script src="{{ url_for('docs.static_file', filename='swagger-ui-standalone-preset.js') }}"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "{{ url_for('docs.openapi') }}", dom_id: "#swagger-ui", deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout",
      validatorUrl: null
    });
  </script>
</body>
</html>
"""


@bp.get("/openapi.json")
def openapi() -> Response:
    svc = services()
    return json_response(build_document(svc.settings, sorted(svc.plans)))


@bp.get("/docs")
def docs() -> str:
    return render_template_string(_PAGE)


@bp.get("/docs/static/<path:filename>")
def static_file(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=STATIC_MAX_AGE_SECONDS)
