"""The OpenAPI 3.0 document served at `/openapi.json`.

Request bodies come from app/spec.py (the declarations the validators read); responses are
the protocol's forms: the `{code, description, result, properties}` envelope, the task
object (every key of protocol.TASK_KEYS), buttons, and error envelopes with their HTTP
statuses. Paths are written under `/mj`; the same API answers under the mode prefixes
`/mj-fast/mj`, `/mj-relax/mj` and `/mj-turbo/mj` (app/api/__init__.py MOUNTS), documented
once in `info.description` and `x-mode-prefixes` rather than four times per path.

Another blueprint documents its routes by calling `register_operation` at import time.
"""
from __future__ import annotations

import copy
from typing import Any

from app import protocol, spec
from app.api import MOUNTS
from app.spec import Schema

OPENAPI_VERSION = "3.0.3"
ERROR_STATUSES = {
    "400": "the body is not a JSON object (code 4)",
    "401": "missing or wrong API key (code 9)",
    "403": "a user key called an admin endpoint (code 9)",
    "404": "unknown id, or another key's (code 3)",
    "405": "method not allowed on this path (code 4)",
    "409": "the Idempotency-Key's first request is still running (code 4)",
    "413": "the body is larger than MJQ_MAX_BODY_BYTES (code 4)",
    "422": "the Idempotency-Key was used with another body (code 4)",
    "429": "the key's request or submit rate is exceeded; see Retry-After (code 9)",
    "503": "the database or Redis is unavailable; see Retry-After (code 9)",
}
SUBMIT_ANSWER = ("an envelope: code 1 submitted, 22 queued, 4 invalid (naming the field), 3 unknown task, "
                 "23 queue full, 24 banned prompt")
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                   "description": "the same key and body answer the same, without a second job"}
#: Extra operations registered by other modules: (method, path, operation).
_REGISTERED: list[tuple[str, str, Schema]] = []


def register_operation(method: str, path: str, operation: Schema) -> None:
    """Add an operation (an OpenAPI Operation Object) to the document; for blueprints outside this table."""
    _REGISTERED.append((method.lower(), path, operation))


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def envelope(result: Schema) -> Schema:
    return {"type": "object", "required": ["code", "description", "result", "properties"], "properties": {
        "code": {"type": "integer", "description": "1 success, 3 not found, 4 validation, 9 failure, 21 existed, "
                                                  "22 in queue, 23 queue full, 24 banned prompt"},
        "description": {"type": "string"},
        "result": result,
        "properties": {"type": "object", "additionalProperties": True},
    }}


def component_schemas() -> dict[str, Schema]:
    nullable_str = {"type": "string", "nullable": True}
    nullable_ms = {"type": "integer", "format": "int64", "nullable": True, "description": "epoch milliseconds"}
    task_props: dict[str, Schema] = {
        "id": {"type": "string", "description": "digits"}, "action": nullable_str,
        "status": {"type": "string", "enum": [
            protocol.NOT_START, protocol.SUBMITTED, protocol.IN_PROGRESS, protocol.SUCCESS, protocol.FAILURE,
            protocol.MODAL, protocol.CANCEL]},
        "prompt": nullable_str, "promptEn": nullable_str, "description": nullable_str, "state": nullable_str,
        "submitTime": nullable_ms, "startTime": nullable_ms, "finishTime": nullable_ms, "imageUrl": nullable_str,
        "progress": {**nullable_str, "example": "100%"}, "failReason": nullable_str,
        "properties": {"type": "object", "additionalProperties": True},
        "buttons": {"type": "array", "items": ref("Button")},
    }
    assert tuple(task_props) == protocol.TASK_KEYS
    return {
        "Task": {"type": "object", "required": list(protocol.TASK_KEYS), "properties": task_props,
                 "description": "every key is always present"},
        "Button": {"type": "object", "required": ["customId", "emoji", "label", "type", "style"], "properties": {
            "customId": {"type": "string"}, "emoji": {"type": "string"}, "label": {"type": "string"},
            "type": {"type": "integer"}, "style": {"type": "integer"}}},
        "Envelope": envelope({"nullable": True, "description": "the answer's value"}),
        "SubmitEnvelope": envelope({"type": "string", "nullable": True, "description": "the new task's id"}),
        "ErrorEnvelope": envelope({"nullable": True}),
    }


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def responses(ok: Schema, ok_description: str = "the answer", ok_content: Schema | None = None) -> Schema:
    out: Schema = {"200": {"description": ok_description, "content": ok_content or json_content(ok)}}
    for status, description in ERROR_STATUSES.items():
        out[status] = {"description": description, "content": json_content(ref("ErrorEnvelope"))}
    return out


def path_param(name: str, description: str, pattern: str | None = None) -> Schema:
    schema: Schema = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def query_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def operations(page_size: int) -> list[tuple[str, str, str, Schema]]:
    """(method, path, endpoint, fields of the Operation Object) of every documented route."""
    tid = path_param("taskId", "a task id (digits)")
    days = query_param("days", {"type": "integer", "minimum": 1, "maximum": 366, "default": 30},
                       "look back this many days")
    limit = query_param("limit", {"type": "integer", "minimum": 1, "maximum": page_size}, "page size")
    envelope_any, submitted, task = ref("Envelope"), ref("SubmitEnvelope"), ref("Task")
    tasks = {"type": "array", "items": task}
    uploaded = envelope({"type": "array", "items": {"type": "string"}, "nullable": True,
                         "description": "the images' URLs"})
    out: list[tuple[str, str, str, Schema]] = []
    for name, summary in (("imagine", "Imagine: a prompt, optionally with reference images"),
                          ("describe", "Describe an image: four prompts"),
                          ("blend", "Blend 2-5 images"), ("shorten", "Shorten a prompt"),
                          ("upload-discord-images", "Upload images; their URLs are the result"),
                          ("action", "Press a button of a task (customId)"),
                          ("change", "Upscale, vary or reroll a grid"),
                          ("simple-change", 'Change by text: "<taskId> U1"'),
                          ("modal", "Complete an action that asked for input (MODAL)")):
        endpoint = "submit." + {"upload-discord-images": "upload_images"}.get(name, name.replace("-", "_"))
        out.append(("post", f"/mj/submit/{name}", endpoint, {
            "summary": summary, "tags": ["submit"], "body": endpoint,
            "parameters": [IDEMPOTENCY_KEY],
            "responses": responses(uploaded if name == "upload-discord-images" else submitted, SUBMIT_ANSWER)}))
    out.append(("post", "/mj/insight-face/swap", "insight_face.swap_face",
                {"summary": "Swap a face into a picture", "tags": ["submit"], "body": "insight_face.swap_face",
                 "parameters": [IDEMPOTENCY_KEY], "responses": responses(submitted, SUBMIT_ANSWER)}))
    out += [
        ("get", "/mj/task/{taskId}/fetch", "tasks.fetch",
         {"summary": "One task", "tags": ["tasks"], "parameters": [tid], "responses": responses(task)}),
        ("post", "/mj/task/list-by-condition", "tasks.list_by_condition",
         {"summary": "Tasks by ids, in the order asked", "tags": ["tasks"], "body": "tasks.list_by_condition",
          "responses": responses(tasks)}),
        ("post", "/mj/task/list-by-ids", "tasks.list_by_ids",
         {"summary": "Same as list-by-condition", "tags": ["tasks"], "body": "tasks.list_by_ids",
          "responses": responses(tasks)}),
        ("get", "/mj/task/list", "tasks.list_tasks",
         {"summary": "Newest first, one page; header X-Next-Before names the next page", "tags": ["tasks"],
          "parameters": [limit, query_param("pageSize", limit["schema"], "same as limit"),
                         query_param("before", {"type": "string", "pattern": "^[0-9]+$"}, "tasks older than this id"),
                         query_param("status", {"type": "string"}, "only this status")],
          "responses": responses(tasks)}),
        ("get", "/mj/task/queue", "tasks.queue",
         {"summary": "Tasks waiting or running, oldest first", "tags": ["tasks"], "parameters": [limit],
          "responses": responses(tasks)}),
        ("get", "/mj/task/{taskId}/image-seed", "tasks.image_seed",
         {"summary": "The seed of a finished image", "tags": ["tasks"], "parameters": [tid],
          "responses": responses(envelope_any)}),
        ("post", "/mj/task/{taskId}/cancel", "tasks.cancel",
         {"summary": "Cancel a waiting or running task", "tags": ["tasks"], "parameters": [tid],
          "responses": responses(envelope_any)}),
        ("get", "/mj/task/{taskId}/deliveries", "webhooks.deliveries",
         {"summary": "The task's webhook deliveries and their attempts", "tags": ["webhooks"], "parameters": [tid],
          "responses": responses({"type": "array", "items": {"type": "object"}})}),
        ("post", "/mj/task/{taskId}/deliveries/{deliveryId}/redeliver", "webhooks.redeliver_one",
         {"summary": "Attempt a delivery again now", "tags": ["webhooks"],
          "parameters": [tid, path_param("deliveryId", "a delivery id (digits)")],
          "responses": responses(envelope_any)}),
        ("get", "/mj/image/{key}", "images.image",
         {"summary": "A stored image (no key needed)", "tags": ["images"], "security": [],
          "parameters": [path_param("key", "the image's key, as in imageUrl")],
          "responses": responses({}, "the image", {"image/*": {"schema": {"type": "string", "format": "binary"}}})}),
        ("get", "/mj/usage", "usage.own_usage",
         {"summary": "The calling key's usage", "tags": ["usage"], "parameters": [days],
          "responses": responses(envelope_any)}),
        ("get", "/mj/webhook-secret", "usage.own_webhook_secret",
         {"summary": "The whsec_ secret the caller's webhooks are signed with (the global one without a key)",
          "tags": ["webhooks"], "responses": responses(envelope_any)}),
        ("post", "/mj/webhook-secret", "usage.rotate_own_webhook_secret",
         {"summary": "Replace that secret; attempts from now on are signed with the new one", "tags": ["webhooks"],
          "responses": responses(envelope_any)}),
    ]
    out += admin_operations(days)
    out += account_operations(page_size)
    out += [
        ("get", "/health", "health.health", {"summary": "The process is up", "tags": ["health"], "security": [],
                                             "responses": responses({"type": "object"})}),
        ("get", "/ready", "health.ready", {"summary": "The database and Redis answer (else 503)", "tags": ["health"],
                                           "security": [], "responses": responses({"type": "object"})}),
        ("post", "/internal/mjproxy/{accountId}/notify", "internal.mjproxy_notify",
         {"summary": "An upstream midjourney-proxy's notify hook (signed by ?sig=)", "tags": ["internal"],
          "security": [], "parameters": [path_param("accountId", "the account"),
                                         {"name": "sig", "in": "query", "required": True,
                                          "schema": {"type": "string"}, "description": "HMAC-SHA256 hex"}],
          "requestBody": {"required": True, "content": json_content({"type": "object"})},
          "responses": responses(envelope_any)}),
    ]
    return out


def admin_operations(days: Schema) -> list[tuple[str, str, str, Schema]]:
    kid = path_param("keyId", "an API key's id")
    env, admin = ref("Envelope"), ["admin"]
    return [
        ("post", "/mj/admin/keys", "admin.create_key",
         {"summary": "Create an API key (shown once)", "tags": admin, "body": "admin.create_key",
          "responses": responses(env)}),
        ("get", "/mj/admin/keys", "admin.list_keys", {"summary": "Every API key", "tags": admin,
                                                      "responses": responses(env)}),
        ("patch", "/mj/admin/keys/{keyId}", "admin.update_key",
         {"summary": "Change a key's image mode", "tags": admin, "parameters": [kid], "body": "admin.update_key",
          "responses": responses(env)}),
        ("delete", "/mj/admin/keys/{keyId}", "admin.revoke_key",
         {"summary": "Revoke a key", "tags": admin, "parameters": [kid], "responses": responses(env)}),
        ("post", "/mj/admin/keys/{keyId}/credit", "admin.credit_key",
         {"summary": "Add tokens to a key's balance", "tags": admin, "parameters": [kid], "body": "admin.credit_key",
          "responses": responses(env)}),
        ("get", "/mj/admin/usage", "admin.usage_of_any_key",
         {"summary": "Usage of one key or all", "tags": admin,
          "parameters": [days, query_param("keyId", {"type": "string"}, "one key")], "responses": responses(env)}),
        ("get", "/mj/admin/stats", "admin.statistics", {"summary": "Statistics", "tags": admin, "parameters": [days],
                                                        "responses": responses(env)}),
    ]


def account_operations(page_size: int) -> list[tuple[str, str, str, Schema]]:
    aid = path_param("accountId", "an account id")
    env, tags = ref("Envelope"), ["accounts"]
    return [
        ("post", "/mj/account/create", "accounts.create", {"summary": "Create an account", "tags": tags,
                                                           "body": "accounts.create", "responses": responses(env)}),
        ("get", "/mj/account/list", "accounts.list_all", {"summary": "Every account", "tags": tags,
                                                          "responses": responses(env)}),
        ("post", "/mj/account/query", "accounts.query",
         {"summary": "One page of accounts (midjourney-proxy Plus admin form)", "tags": tags, "body": "accounts.query",
          "responses": responses({"type": "object", "properties": {
              "content": {"type": "array", "items": {"type": "object"}}, "number": {"type": "integer"},
              "size": {"type": "integer"}, "totalElements": {"type": "integer"}, "totalPages": {"type": "integer"},
              "first": {"type": "boolean"}, "last": {"type": "boolean"}}})}),
        ("get", "/mj/account/{accountId}/fetch", "accounts.fetch",
         {"summary": "One account", "tags": tags, "parameters": [aid], "responses": responses(env)}),
        ("put", "/mj/account/{accountId}/update", "accounts.update",
         {"summary": "Change an account", "tags": tags, "parameters": [aid], "body": "accounts.update",
          "responses": responses(env)}),
        ("delete", "/mj/account/{accountId}/delete", "accounts.delete",
         {"summary": "Delete an account with no open tasks", "tags": tags, "parameters": [aid],
          "responses": responses(env)}),
        ("post", "/mj/account/{accountId}/enable", "accounts.enable",
         {"summary": "Enable an account", "tags": tags, "parameters": [aid], "responses": responses(env)}),
        ("post", "/mj/account/{accountId}/disable", "accounts.disable",
         {"summary": "Disable an account", "tags": tags, "parameters": [aid], "body": "accounts.disable",
          "body_optional": True, "responses": responses(env)}),
    ]


def build_document(settings: Any, plans: list[str]) -> Schema:
    """The OpenAPI 3.0 document of this server's API, with the limits of `settings`."""
    bodies = spec.request_bodies(settings.max_prompt_chars, settings.max_images, plans)
    paths: dict[str, dict[str, Schema]] = {}
    for method, path, endpoint, fields in operations(settings.list_page_size):
        operation = {k: v for k, v in fields.items() if k not in ("body", "body_optional")}
        operation["operationId"] = endpoint
        if "body" in fields:
            operation["requestBody"] = {"required": not fields.get("body_optional", False),
                                        "content": json_content(bodies[fields["body"]])}
        paths.setdefault(path, {})[method] = operation
    for method, path, operation in _REGISTERED:
        paths.setdefault(path, {})[method] = copy.deepcopy(operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "mjq", "version": "1", "description": (
            "A distributed Midjourney job executor speaking the midjourney-proxy protocol.\n\n"
            "Every `/mj/...` path also answers under the mode prefixes `/mj-fast/mj`, `/mj-relax/mj` and "
            "`/mj-turbo/mj`, which run the job in that mode. Send the key as header `mj-api-secret` or "
            "`Authorization: Bearer`. Validation failures answer HTTP 200 with code 4 and a description naming "
            "the field, as midjourney-proxy does.")},
        "x-mode-prefixes": [prefix for prefix, _mode in MOUNTS.values() if prefix != "/mj"],
        "servers": [{"url": "/"}],
        "security": [{"apiSecret": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {"apiSecret": {"type": "apiKey", "in": "header", "name": "mj-api-secret"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
