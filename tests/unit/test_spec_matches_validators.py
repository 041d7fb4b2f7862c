"""The declared request bodies (app/spec.py) and the validators agree: every declared enum, bound,
format and required field, when broken, gets code 4 naming the field; every example is accepted."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import protocol, spec

#: Endpoint suffix -> (method, path) of the declared bodies checked here.
ROUTES = {
    "submit.imagine": ("post", "/mj/submit/imagine"), "submit.describe": ("post", "/mj/submit/describe"),
    "submit.blend": ("post", "/mj/submit/blend"), "submit.shorten": ("post", "/mj/submit/shorten"),
    "submit.upload_images": ("post", "/mj/submit/upload-discord-images"),
    "submit.action": ("post", "/mj/submit/action"), "submit.change": ("post", "/mj/submit/change"),
    "submit.simple_change": ("post", "/mj/submit/simple-change"), "submit.modal": ("post", "/mj/submit/modal"),
    "insight_face.swap_face": ("post", "/mj/insight-face/swap"),
    "tasks.list_by_condition": ("post", "/mj/task/list-by-condition"),
    "admin.create_key": ("post", "/mj/admin/keys"), "admin.credit_key": ("post", "/mj/admin/keys/{keyId}/credit"),
    "admin.update_key": ("patch", "/mj/admin/keys/{keyId}"),
    "accounts.create": ("post", "/mj/account/create"),
    "accounts.query": ("post", "/mj/account/query"), "accounts.update": ("put", "/mj/account/sim-1/update"),
    "accounts.disable": ("post", "/mj/account/sim-1/disable"),
}


def declared(app: Any) -> dict[str, Any]:
    settings = app.extensions["mjq"].settings
    return spec.request_bodies(settings.max_prompt_chars, settings.max_images, sorted(app.extensions["mjq"].plans))


#: A value of another JSON type than the one declared.
WRONG_TYPE = {"string": {"not": "a string"}, "integer": "12", "boolean": "true", "array": "[]", "object": "{}"}


def breaking_values(schema: dict[str, Any]) -> list[Any]:
    """Values just outside what `schema` declares."""
    out: list[Any] = [WRONG_TYPE[schema["type"]]] if "type" in schema else []
    if "enum" in schema:
        out.append("NOT_A_DECLARED_VALUE")
    if schema.get("format") == spec.DATA_URL_FORMAT:
        out += ["not a data url", "data:image/png;base64,aGVsbG8="]
    if "maxLength" in schema:
        out.append("x" * (schema["maxLength"] + 1))
    if schema.get("minLength", 0) >= 1:
        out.append("")
    if "minimum" in schema:
        out.append(schema["minimum"] - 1)
    if "maximum" in schema:
        out.append(schema["maximum"] + 1)
    item = schema.get("items", {}).get("example", spec.EXAMPLE_TASK_ID)
    if "maxItems" in schema:
        out.append([item] * (schema["maxItems"] + 1))
    if schema.get("minItems", 0) >= 1:
        out.append([item] * (schema["minItems"] - 1))
    if "enum" in schema.get("items", {}):
        out.append(["NOT_A_DECLARED_VALUE"])
    return out


def send(client: FlaskClient, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    method, path = ROUTES[endpoint]
    if "{keyId}" in path:
        key = client.post("/mj/admin/keys", json={"name": "spec"}).get_json()["result"]["id"]
        path = path.replace("{keyId}", key)
    answer = getattr(client, method)(path, json=body)
    assert answer.status_code in (200, 400), (endpoint, body, answer.status_code)
    return answer.get_json()


def cases(app: Any) -> list[tuple[str, str, Any]]:
    out = []
    for endpoint, schema in declared(app).items():
        if endpoint not in ROUTES:
            continue
        for field, field_schema in schema["properties"].items():
            out += [(endpoint, field, value) for value in breaking_values(field_schema)]
        out += [(endpoint, field, KeyError) for field in schema.get("required", [])]
    return out


def test_every_declared_body_the_checks_cover_has_an_example_the_validators_accept(app, client) -> None:
    bodies = declared(app)
    assert set(ROUTES) <= set(bodies)
    for endpoint in ROUTES:
        answer = send(client, endpoint, bodies[endpoint].get("example", {}))
        if isinstance(answer, dict) and "code" in answer:
            assert answer["code"] != protocol.CODE_VALIDATION_ERROR, (endpoint, answer)


def test_a_request_outside_any_declared_limit_or_choice_gets_code_4_naming_the_field(app, client) -> None:
    bodies = declared(app)
    checked = cases(app)
    assert len(checked) > 120  # every body contributes: enums, bounds, formats, required fields
    for endpoint, field, value in checked:
        body = copy.deepcopy(bodies[endpoint]["example"])
        if value is KeyError:
            body.pop(field, None)
        else:
            body[field] = value
        answer = send(client, endpoint, body)
        assert answer["code"] == protocol.CODE_VALIDATION_ERROR, (endpoint, field, str(value)[:60], answer)
        assert field in answer["description"], (endpoint, field, str(value)[:60], answer["description"])


@pytest.mark.parametrize("field", ["botType", "state", "notifyHook"])
def test_the_common_submit_fields_are_declared_on_every_submit_body(app, field: str) -> None:
    bodies = declared(app)
    for endpoint in ROUTES:
        if endpoint.startswith(("submit.", "insight_face.")) and endpoint not in ("submit.upload_images",
                                                                                 "submit.modal"):
            assert field in bodies[endpoint]["properties"], endpoint
