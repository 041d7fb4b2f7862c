"""Request bodies as data: one JSON-Schema (OpenAPI 3.0 dialect) declaration per body.

The limits and choices here are the ones the validators enforce: app/schemas.py reads its
constants from this module, account bodies are built from app/services/account_admin.py's
tables, and tests/unit/test_spec_matches_validators.py sends, for every declared enum,
bound and required field, a request just outside it and expects code 4 naming the field.
So the OpenAPI document (app/openapi.py) and the code cannot drift apart.

Bounds that come from settings (prompt length, images per request, image size) are
parameters of `request_bodies`.
"""
from __future__ import annotations

from typing import Any

from app import protocol

#: Longest URL accepted for notifyHook, in characters.
MAX_URL_CHARS = 2048
#: Longest `state`, in characters (trueai caps it at 255; we allow more, bounded).
MAX_STATE_CHARS = 4096
#: Shapes of a blend, and how many images one takes (inclusive).
BLEND_DIMENSIONS = ("PORTRAIT", "SQUARE", "LANDSCAPE")
BLEND_IMAGES = (2, 5)
#: `action` of /submit/change, and the image `index` UPSCALE and VARIATION take (inclusive).
CHANGE_ACTIONS = ("UPSCALE", "VARIATION", "REROLL")
CHANGE_INDEX = (1, 4)
#: The custom string format of an image field: `data:image/<png|jpeg|webp|gif>;base64,<data>`.
DATA_URL_FORMAT = "data-url"
#: A 1×1 PNG, the examples' image.
EXAMPLE_DATA_URL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
                    "60e6kgAAAABJRU5ErkJggg==")
#: Example task id (digits, as every task id is sent).
EXAMPLE_TASK_ID = "1732000000000001"

Schema = dict[str, Any]


def data_url(description: str = "an image as a base64 data URL") -> Schema:
    return {"type": "string", "format": DATA_URL_FORMAT,
            "description": f"{description}: data:image/png|jpeg|webp|gif;base64,…; the bytes must match the type",
            "example": EXAMPLE_DATA_URL}


def task_id(description: str = "a task id") -> Schema:
    return {"type": "string", "pattern": "^[0-9]{1,19}$", "description": f"{description} (digits; numbers accepted)",
            "example": EXAMPLE_TASK_ID}


def body(properties: Schema, required: tuple[str, ...] = (), example: Schema | None = None,
         description: str = "") -> Schema:
    """An object body; unknown fields are ignored by the submit validators, so extra properties are allowed."""
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    if example is not None:
        out["example"] = example
    if description:
        out["description"] = description
    return out


def common_fields() -> Schema:
    """Fields every submit body may carry (schemas.common)."""
    return {
        "botType": {"type": "string", "enum": list(protocol.BOT_TYPES), "default": "MID_JOURNEY",
                    "description": f"aliases accepted: {', '.join(protocol.BOT_TYPE_ALIASES)}; case-insensitive"},
        "notifyHook": {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS, "nullable": True,
                       "description": "http(s) URL POSTed the task JSON at every change; a domain name, not an IP"},
        "state": {"type": "string", "maxLength": MAX_STATE_CHARS, "nullable": True,
                  "description": "echoed back in the task's `state`"},
        "accountFilter": {"type": "object", "nullable": True, "properties": {
            "instanceId": {"type": "string", "description": "run on this account only"},
            "modes": {"type": "array", "items": {"type": "string", "enum": ["FAST", "RELAX", "TURBO"]}},
            "remix": {"type": "boolean"},
        }},
    }


def prompt(max_chars: int, description: str = "the prompt, Midjourney flags included") -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_chars, "description": f"{description} (trimmed)",
            "example": "a lighthouse at dusk --ar 3:2"}


def submit_bodies(max_prompt_chars: int, max_images: int) -> dict[str, Schema]:
    """The submit bodies by operation name (the view function's name in app/api/submit.py)."""
    common = common_fields()
    images = {"type": "array", "items": data_url(), "maxItems": max_images}
    return {
        "imagine": body({"prompt": prompt(max_prompt_chars), "base64Array": {**images, "minItems": 0},
                         "base64": {**data_url("deprecated: one more image, appended"), "nullable": True},
                         **common}, ("prompt",), {"prompt": "a lighthouse at dusk --ar 3:2"}),
        "describe": body({"base64": data_url("the image to describe"), **common}, ("base64",),
                         {"base64": EXAMPLE_DATA_URL}),
        "blend": body({"base64Array": {**images, "minItems": BLEND_IMAGES[0], "maxItems": BLEND_IMAGES[1]},
                       "dimensions": {"type": "string", "enum": list(BLEND_DIMENSIONS), "default": "SQUARE"},
                       **common}, ("base64Array",), {"base64Array": [EXAMPLE_DATA_URL] * 2, "dimensions": "SQUARE"}),
        "shorten": body({"prompt": prompt(max_prompt_chars), **common}, ("prompt",),
                        {"prompt": "a lighthouse at dusk, dramatic light"}),
        "upload_images": body({"base64Array": {**images, "minItems": 1}}, ("base64Array",),
                              {"base64Array": [EXAMPLE_DATA_URL]}),
        "action": body({"taskId": task_id(), "customId": {"type": "string", "minLength": 1,
                                                          "description": "a customId from the task's buttons",
                                                          "example": "MJ::JOB::upsample::1::0f1e2d"},
                        **common}, ("taskId", "customId"),
                       {"taskId": EXAMPLE_TASK_ID, "customId": "MJ::JOB::upsample::1::0f1e2d"}),
        "change": body({"taskId": task_id(), "action": {"type": "string", "enum": list(CHANGE_ACTIONS)},
                        "index": {"type": "integer", "minimum": CHANGE_INDEX[0], "maximum": CHANGE_INDEX[1],
                                  "description": "required for UPSCALE and VARIATION"},
                        **common}, ("taskId", "action"), {"taskId": EXAMPLE_TASK_ID, "action": "UPSCALE", "index": 1}),
        "simple_change": body({"content": {"type": "string", "pattern": r"^\s*[0-9]+\s+([UuVv][1-4]|[Rr])\s*$",
                                           "description": '"<taskId> U1..U4", "<taskId> V1..V4" or "<taskId> R"'},
                               **common}, ("content",), {"content": f"{EXAMPLE_TASK_ID} U2"}),
        "modal": body({"taskId": task_id("the task whose action asked for a modal"),
                       "prompt": {**prompt(max_prompt_chars), "nullable": True, "minLength": 0},
                       "maskBase64": {**data_url("the region to repaint (vary region)"), "nullable": True}},
                      ("taskId",), {"taskId": EXAMPLE_TASK_ID, "prompt": "a red door"}),
        "swap_face": body({"sourceBase64": data_url("the face"), "targetBase64": data_url("the picture"), **common},
                          ("sourceBase64", "targetBase64"),
                          {"sourceBase64": EXAMPLE_DATA_URL, "targetBase64": EXAMPLE_DATA_URL}),
    }


def task_query_bodies() -> dict[str, Schema]:
    from app.api.tasks import MAX_IDS

    ids = body({"ids": {"type": "array", "maxItems": MAX_IDS, "nullable": True,
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                        "description": "task ids; ids that are not digits or not yours are left out"}},
               example={"ids": [EXAMPLE_TASK_ID]})
    return {"list_by_condition": ids}


def admin_bodies(plans: list[str]) -> dict[str, Schema]:
    """Bodies of `/admin/keys` (app/api/admin.py, app/services/keys.py)."""
    from app.api.admin import MAX_NOTE_CHARS
    from app.image_modes import IMAGE_MODES, RELAY
    from app.services.keys import MAX_TOKENS, ROLES

    image_mode: Schema = {"type": "string", "enum": list(IMAGE_MODES), "default": RELAY,
                          "description": "the image URL form this key's answers show on the plain mounts"}

    plan: Schema = {"type": "string", "description": "the plan (default: MJQ_DEFAULT_PLAN)"}
    if plans:
        plan["enum"] = plans
    return {
        "create_key": body({"name": {"type": "string", "minLength": 1, "maxLength": 128},
                            "plan": plan, "role": {"type": "string", "enum": list(ROLES), "default": "user"},
                            "balance": {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS, "nullable": True,
                                        "description": "tokens; omit for unmetered"},
                            "imageMode": image_mode},
                           ("name",), {"name": "team-a", "role": "user"}),
        "update_key": body({"imageMode": image_mode}, (), {"imageMode": "proxy"}),
        "credit_key": body({"amount": {"type": "integer", "not": {"enum": [0]}, "minimum": -MAX_TOKENS,
                                       "maximum": MAX_TOKENS,
                                       "description": "tokens to add (negative to take)"},
                            "note": {"type": "string", "maxLength": MAX_NOTE_CHARS, "nullable": True}},
                           ("amount",), {"amount": 1000, "note": "top-up"}),
    }


def account_fields() -> Schema:
    """The settable account fields, from account_admin's own tables."""
    from app.services import account_admin as aa

    settings: dict[str, Schema] = {}
    for driver, specs in aa.DRIVER_SETTINGS.items():
        for key, spec in specs.items():
            note = (f"driver {driver}{', required' if spec.required else ''}"
                    f"{', secret: stored encrypted' if spec.secret else ''}")
            settings[key] = {"type": "string", "nullable": True, "description": note}
    fields: Schema = {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "chosen when omitted"},
        "name": {"type": "string", "minLength": 1, "maxLength": aa.MAX_NAME_CHARS},
        "driver": {"type": "string", "enum": list(aa.DRIVERS)},
        "modes": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(aa.MODES)}},
        "botTypes": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(protocol.BOT_TYPES)}},
        "remix": {"type": "boolean"},
        "enable": {"type": "boolean"},
        "disabledReason": {"type": "string", "maxLength": aa.MAX_REASON_CHARS, "nullable": True},
        "settings": {"type": "object", "nullable": True, "properties": settings,
                     "description": "the driver's settings; null removes one; secrets are never returned"},
    }
    for key, (lo, hi) in aa.BOUNDS.items():
        fields[key] = {"type": "integer", "minimum": lo, "maximum": hi}
    return fields


def account_bodies() -> dict[str, Schema]:
    from app.api.accounts import MAX_PAGE_NUMBER, MAX_PAGE_SIZE
    from app.services import account_admin as aa

    fields = account_fields()
    return {
        "create": body(fields, ("name", "driver"), {"name": "sim-1", "driver": "simulator", "modes": ["FAST"]}),
        "update": body(fields, (), {"weight": 2}, "only the fields sent change"),
        "query": body({"pageNumber": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_NUMBER, "default": 0},
                       "pageSize": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 10}},
                      example={"pageNumber": 0, "pageSize": 10}),
        "disable": body({"reason": {"type": "string", "maxLength": aa.MAX_REASON_CHARS, "nullable": True}},
                        example={"reason": "maintenance"}),
    }


def request_bodies(max_prompt_chars: int, max_images: int, plans: list[str]) -> dict[str, Schema]:
    """Every declared request body, keyed by Flask endpoint suffix (`submit.imagine`, `accounts.create`, ...)."""
    out: dict[str, Schema] = {}
    for prefix, bodies in (("submit", submit_bodies(max_prompt_chars, max_images)), ("tasks", task_query_bodies()),
                           ("admin", admin_bodies(plans)), ("accounts", account_bodies())):
        out.update({f"{prefix}.{name}": schema for name, schema in bodies.items()})
    out["insight_face.swap_face"] = out.pop("submit.swap_face")
    out["tasks.list_by_ids"] = out["tasks.list_by_condition"]
    return out
