"""/openapi.json describes every route of the API; /docs is Swagger UI served entirely by mjq."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import protocol
from app.api import MOUNTS
from config import Settings

#: Routes documented by their owners through app.openapi.register_operation, or deliberately not at all:
#: SSE streams never end (a fuzzer would hang on them), and /metrics, /admin pages and the static
#: files are not part of the JSON API.
UNDOCUMENTED = re.compile(r"^/(mj/task/(<task_id>/)?stream|metrics|admin(/|$)|static/|docs|openapi\.json)")


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path), sim_job_seconds=0.0,
                             public_url="http://mjq.test", api_secret="s3cret")


def document(client: FlaskClient) -> dict:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    return answer.get_json()


def test_the_openapi_document_is_public_even_when_the_api_needs_a_key(client: FlaskClient) -> None:
    assert client.get("/mj/task/list").status_code == 401
    assert document(client)["openapi"].startswith("3.0")
    assert client.get("/docs").status_code == 200


def test_every_api_route_is_in_the_document_with_its_methods(app: Flask, client: FlaskClient) -> None:
    paths = document(client)["paths"]
    for rule in app.url_map.iter_rules():
        mount = rule.endpoint.split(".", 1)[0]
        if mount in MOUNTS and mount != "mj" or UNDOCUMENTED.match(rule.rule):
            continue
        path = re.sub(r"<(?:path:)?(\w+)>", lambda m: "{" + re.sub(r"_(\w)", lambda c: c[1].upper(), m[1]) + "}",
                      rule.rule)
        assert path in paths, f"{rule.rule} ({rule.endpoint}) is not in /openapi.json"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], f"{method} {rule.rule} is not in /openapi.json"


def test_the_mode_prefixes_and_both_ways_of_sending_the_key_are_documented(client: FlaskClient) -> None:
    doc = document(client)
    assert doc["x-mode-prefixes"] == [p for p, _ in MOUNTS.values() if p != "/mj"]
    assert all(prefix in doc["info"]["description"] for prefix in ("/mj-fast/mj", "/mj-relax/mj", "/mj-turbo/mj"))
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiSecret"] == {"type": "apiKey", "in": "header", "name": "mj-api-secret"}
    assert schemes["bearer"]["scheme"] == "bearer"


def test_the_task_schema_lists_every_task_key_as_required(client: FlaskClient) -> None:
    task = document(client)["components"]["schemas"]["Task"]
    assert task["required"] == list(protocol.TASK_KEYS)
    assert set(task["properties"]) == set(protocol.TASK_KEYS)
    assert task["properties"]["imageUrl"]["nullable"] is True


def test_submit_limits_in_the_document_follow_the_settings(tmp_path: Path, sqlite_url: str, celery, redis,
                                                           accounts) -> None:
    from app import create_app

    settings = Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path), max_prompt_chars=123,
                                 max_images=3)
    doc = document(create_app(settings, celery=celery, redis=redis).test_client())
    imagine = doc["paths"]["/mj/submit/imagine"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert imagine["properties"]["prompt"]["maxLength"] == 123
    assert imagine["properties"]["base64Array"]["maxItems"] == 3
    assert imagine["required"] == ["prompt"]


def test_every_error_status_answers_with_the_error_envelope(client: FlaskClient) -> None:
    fetch = document(client)["paths"]["/mj/task/{taskId}/fetch"]["get"]["responses"]
    for status in ("400", "401", "403", "404", "405", "409", "413", "422", "429", "503"):
        assert fetch[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}


def test_swagger_ui_loads_only_files_mjq_serves(client: FlaskClient) -> None:
    page = client.get("/docs").get_data(as_text=True)
    assert "SwaggerUIBundle" in page and "validatorUrl: null" in page
    assert re.findall(r"https?://[^\s\"'<>]+", page) == []  # no CDN, no other host: every URL is relative
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) >= 3
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.data) > 500, asset
    assert '"/openapi.json"' in page


def test_a_missing_swagger_ui_file_is_a_404(client: FlaskClient) -> None:
    assert client.get("/docs/static/nope.js").status_code == 404
    assert client.get("/docs/static/../../../setup.py").status_code == 404
