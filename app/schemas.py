"""Request parsing: strict, field by field, each failure a ValidationFailed naming the field.

Unknown fields are ignored (clients send extras such as `chooseSameChannel` everywhere).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from app import protocol
from app.errors import BadRequest, ValidationFailed

# Limits and choices are declared once, in app/spec.py, which the OpenAPI document is built from.
from app.spec import BLEND_DIMENSIONS, BLEND_IMAGES, CHANGE_ACTIONS, CHANGE_INDEX, MAX_STATE_CHARS, MAX_URL_CHARS
from config import MODES
from workers import ssrf

_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[\w.+-]+=[\w.+-]+)*);base64,(?P<data>.*)$",
                          re.DOTALL)
# Image types by magic bytes; the declared MIME type must agree with the bytes.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
_MIME_EXT = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp", "image/gif": "gif"}
_MODE_FLAG_RE = re.compile(r"(?:^|\s)--(fast|relax|turbo)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DecodedImage:
    """An image from a data URL: its bytes and file extension (png, jpeg, webp, gif)."""

    data: bytes
    ext: str


@dataclass(frozen=True)
class AccountFilter:
    instance_id: str | None = None
    modes: tuple[str, ...] = ()
    remix: bool | None = None


@dataclass(frozen=True)
class Limits:
    """Input caps from the settings (bytes, characters, counts, pixels)."""

    max_prompt_chars: int = 4000
    max_images: int = 5
    max_image_bytes: int = 10 * 1024 * 1024
    #: Most pixels (width × height) of an image in a request: a few KB of PNG can declare hundreds of megapixels.
    max_image_pixels: int = 40_000_000

    @classmethod
    def of(cls, settings: Any) -> "Limits":
        return cls(settings.max_prompt_chars, settings.max_images, settings.max_image_bytes, settings.max_image_pixels)


@dataclass(frozen=True)
class Common:
    """Fields every submit body may carry."""

    bot_type: str = "MID_JOURNEY"
    notify_hook: str | None = None
    state: str | None = None
    account_filter: AccountFilter = field(default_factory=AccountFilter)


@dataclass(frozen=True)
class ImagineRequest:
    prompt: str
    images: tuple[DecodedImage, ...] = ()
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class ImagesRequest:
    """describe (one image), blend (2–5 and dimensions), upload (1–N), face swap (source, target)."""

    images: tuple[DecodedImage, ...]
    dimensions: str = "SQUARE"
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class ActionRequest:
    task_id: int
    custom_id: str
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class ModalRequest:
    task_id: int
    prompt: str | None
    mask: DecodedImage | None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object. Raises BadRequest (HTTP 400, code 4) otherwise."""
    if not raw.strip():
        raise BadRequest("request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # the decoder recurses once per level of [ or {
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    # Strict JSON can carry NUL only escaped, so the cheap byte test finds every candidate; the walk rules out
    # an escaped backslash followed by "u0000".
    if b"\\u0000" in raw and _holds_nul(body):
        raise BadRequest(NUL_REFUSED)
    return body


#: PostgreSQL text and JSON cannot hold U+0000: a request carrying one is refused before anything is stored.
NUL_REFUSED = "request contains a NUL character (\\u0000), which no field accepts"


def _holds_nul(value: Any) -> bool:
    # A loop over a stack rather than recursion: a body the decoder took can be nested deeper than Python recurses.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def refuse_nul_in_query(query_string: bytes) -> None:
    """Raises BadRequest when the URL's query carries a NUL (`%00`): it would reach a PostgreSQL parameter."""
    if b"%00" in query_string:
        raise BadRequest(NUL_REFUSED)


def image_ext(data: bytes) -> str | None:
    """png/jpeg/gif/webp from the first bytes, or None for anything else."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_data_url(value: Any, name: str, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode a strict `data:image/<type>;base64,<data>` URL.

    Raises ValidationFailed naming `name` when it is not a data URL, not strict base64, over
    `max_bytes` decoded, not a PNG/JPEG/WebP/GIF by its magic bytes, or its header is unreadable
    or declares more than `max_pixels` pixels.
    """
    if not isinstance(value, str):
        raise ValidationFailed(f"{name} must be a data URL string such as data:image/png;base64,...")
    match = _DATA_URL_RE.match(value.strip())
    if not match:
        raise ValidationFailed(f"{name} is not a base64 data URL (expected data:image/png;base64,...)")
    mime = match.group("mime").lower()
    if mime not in _MIME_EXT:
        raise ValidationFailed(f"{name} has type {mime}; accepted: image/png, image/jpeg, image/webp, image/gif")
    payload = match.group("data")
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise ValidationFailed(f"{name} is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(f"{name} is not valid base64") from None
    if len(data) > max_bytes:
        raise ValidationFailed(f"{name} is larger than {max_bytes} bytes")
    ext = image_ext(data)
    if ext is None:
        raise ValidationFailed(f"{name} is not a PNG, JPEG, WebP or GIF image")
    if ext != _MIME_EXT[mime]:
        raise ValidationFailed(f"{name} declares {mime} but holds a {ext.upper()} image")
    check_pixels(data, name, ext, max_pixels)
    return DecodedImage(data=data, ext=ext)


def check_pixels(data: bytes, name: str, ext: str, max_pixels: int) -> None:
    """Refuse an image whose header declares more than `max_pixels` pixels, reading only the header.

    Raises ValidationFailed naming `name`, also when Pillow cannot read the header.
    """
    most = f"at most {max_pixels / 1e6:g} MP"
    try:
        with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header, decodes nothing
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning when warnings are errors
        bomb = (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise ValidationFailed(f"{name} declares more than {bomb:.1f} MP; {most}") from None
    except (OSError, SyntaxError, ValueError):
        raise ValidationFailed(f"{name} is not a readable {ext.upper()} image") from None
    if width * height > max_pixels:
        raise ValidationFailed(f"{name} is {width}×{height} ({width * height / 1e6:.1f} MP); {most}")


def optional_str(body: dict[str, Any], key: str, max_chars: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{key} must be a string")
    if len(value) > max_chars:
        raise ValidationFailed(f"{key} is longer than {max_chars} characters")
    return value


def notify_hook(body: dict[str, Any]) -> str | None:
    value = optional_str(body, "notifyHook", MAX_URL_CHARS)
    if not value or not value.strip():
        return None
    # The delivery-time guard's static rules (scheme, length, a domain name rather than an IP
    # literal); whether the name resolves to a public address is checked at every attempt.
    try:
        ssrf.parse_url(value.strip())
    except ssrf.UrlRefused as exc:
        raise ValidationFailed(f"notifyHook {exc}") from None
    return value.strip()


def bot_type(body: dict[str, Any]) -> str:
    value = body.get("botType")
    if value is None or value == "":
        return "MID_JOURNEY"
    if not isinstance(value, str):
        raise ValidationFailed("botType must be MID_JOURNEY or NIJI_JOURNEY")
    upper = value.strip().upper()
    upper = protocol.BOT_TYPE_ALIASES.get(upper, upper)
    if upper not in protocol.BOT_TYPES:
        raise ValidationFailed(f"botType must be MID_JOURNEY or NIJI_JOURNEY, got {value!r}")
    return upper


def account_filter(body: dict[str, Any]) -> AccountFilter:
    value = body.get("accountFilter")
    if value is None:
        return AccountFilter()
    if not isinstance(value, dict):
        raise ValidationFailed("accountFilter must be an object")
    instance_id = value.get("instanceId")
    if instance_id is not None and not isinstance(instance_id, (str, int)):
        raise ValidationFailed("accountFilter.instanceId must be a string")
    modes = value.get("modes") or []
    if not isinstance(modes, list) or any(not isinstance(m, str) or m.upper() not in MODES for m in modes):
        raise ValidationFailed("accountFilter.modes must be a list of FAST, RELAX, TURBO")
    remix = value.get("remix")
    if remix is not None and not isinstance(remix, bool):
        raise ValidationFailed("accountFilter.remix must be true or false")
    return AccountFilter(
        instance_id=str(instance_id) if instance_id not in (None, "") else None,
        modes=tuple(m.upper() for m in modes),
        remix=remix,
    )


def prompt_mode(prompt: str) -> str | None:
    """FAST/RELAX/TURBO named by a `--fast`/`--relax`/`--turbo` flag in the prompt (the last one wins)."""
    found = _MODE_FLAG_RE.findall(prompt)
    return found[-1].upper() if found else None


def common(body: dict[str, Any]) -> Common:
    return Common(bot_type=bot_type(body), notify_hook=notify_hook(body),
                  state=optional_str(body, "state", MAX_STATE_CHARS), account_filter=account_filter(body))


def prompt_field(body: dict[str, Any], limits: Limits, key: str = "prompt", required: bool = True) -> str | None:
    """A trimmed prompt; blank is None (or ValidationFailed when required)."""
    raw = body.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if required:
            raise ValidationFailed(f"{key} is required")
        return None
    if not isinstance(raw, str):
        raise ValidationFailed(f"{key} must be a string")
    prompt = raw.strip()
    if len(prompt) > limits.max_prompt_chars:
        raise ValidationFailed(f"{key} is longer than {limits.max_prompt_chars} characters")
    return prompt


def image_array(body: dict[str, Any], key: str, limits: Limits, least: int, most: int) -> tuple[DecodedImage, ...]:
    """`key` as an array of `least`..`most` data URLs, each decoded strictly."""
    array = body.get(key)
    if array is None:
        array = []
    if not isinstance(array, list):
        raise ValidationFailed(f"{key} must be an array of data URLs")
    if not least <= len(array) <= most:
        wanted = f"{least} to {most}" if least != most else str(least)
        raise ValidationFailed(f"{key} holds {len(array)} images; {wanted} are needed")
    return tuple(decode_data_url(v, f"{key}[{i}]", limits.max_image_bytes, limits.max_image_pixels)
                 for i, v in enumerate(array))


def image_field(body: dict[str, Any], key: str, limits: Limits) -> DecodedImage:
    """One required data URL in `key`."""
    if body.get(key) in (None, ""):
        raise ValidationFailed(f"{key} is required")
    return decode_data_url(body[key], key, limits.max_image_bytes, limits.max_image_pixels)


def imagine_request(body: dict[str, Any], limits: Limits) -> ImagineRequest:
    """Validate a /submit/imagine body. Raises ValidationFailed naming the first bad field."""
    prompt = prompt_field(body, limits)
    assert prompt is not None
    array = body.get("base64Array")
    if array is not None and not isinstance(array, list):
        raise ValidationFailed("base64Array must be an array of data URLs")
    if body.get("base64") not in (None, ""):
        # the deprecated single-image field is appended, as upstream does
        body = {**body, "base64Array": [*(array or []), body["base64"]]}
    images = image_array(body, "base64Array", limits, 0, limits.max_images)
    return ImagineRequest(prompt=prompt, images=images, common=common(body))


def blend_request(body: dict[str, Any], limits: Limits) -> ImagesRequest:
    images = image_array(body, "base64Array", limits, *BLEND_IMAGES)
    dimensions = body.get("dimensions", "SQUARE")
    if not isinstance(dimensions, str) or dimensions.upper() not in BLEND_DIMENSIONS:
        raise ValidationFailed("dimensions must be PORTRAIT, SQUARE or LANDSCAPE")
    return ImagesRequest(images=images, dimensions=dimensions.upper(), common=common(body))


def describe_request(body: dict[str, Any], limits: Limits) -> ImagesRequest:
    return ImagesRequest(images=(image_field(body, "base64", limits),), common=common(body))


def swap_request(body: dict[str, Any], limits: Limits) -> ImagesRequest:
    source = image_field(body, "sourceBase64", limits)
    target = image_field(body, "targetBase64", limits)
    return ImagesRequest(images=(source, target), common=common(body))


def upload_request(body: dict[str, Any], limits: Limits) -> ImagesRequest:
    return ImagesRequest(images=image_array(body, "base64Array", limits, 1, limits.max_images))


def required_task_id(body: dict[str, Any], key: str = "taskId") -> int:
    value = body.get(key)
    if value is None or value == "":
        raise ValidationFailed(f"{key} is required")
    parsed = parse_task_id(value)
    if parsed is None:
        raise ValidationFailed(f"{key} must be a task id (digits)")
    return parsed


def action_request(body: dict[str, Any]) -> ActionRequest:
    task_id = required_task_id(body)
    custom_id = body.get("customId")
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise ValidationFailed("customId is required (a customId from the task's buttons)")
    return ActionRequest(task_id=task_id, custom_id=custom_id.strip(), common=common(body))


_CHANGE_ACTIONS = CHANGE_ACTIONS
_SIMPLE_CHANGE_RE = re.compile(r"^\s*(\d+)\s+(?:([UV])([1-4])|(R))\s*$", re.IGNORECASE)


def change_request(body: dict[str, Any]) -> tuple[int, str, int | None, Common]:
    """/submit/change: (taskId, action, index) with index 1..4 for UPSCALE and VARIATION."""
    task_id = required_task_id(body)
    action = body.get("action")
    if not isinstance(action, str) or action.upper() not in _CHANGE_ACTIONS:
        raise ValidationFailed("action must be UPSCALE, VARIATION or REROLL")
    action = action.upper()
    index = body.get("index")
    if action != "REROLL":
        if isinstance(index, bool) or not isinstance(index, int) or not CHANGE_INDEX[0] <= index <= CHANGE_INDEX[1]:
            raise ValidationFailed("index must be 1, 2, 3 or 4")
    return task_id, action, index if action != "REROLL" else None, common(body)


def simple_change_request(body: dict[str, Any]) -> tuple[int, str, int | None, Common]:
    """/submit/simple-change: `content` is "<taskId> U1..U4 | V1..V4 | R"."""
    content = body.get("content")
    match = _SIMPLE_CHANGE_RE.match(content) if isinstance(content, str) else None
    if not match:
        raise ValidationFailed('content must be "<taskId> U1..U4", "<taskId> V1..V4" or "<taskId> R"')
    task_id = parse_task_id(match[1])
    if task_id is None:
        raise ValidationFailed("content names an impossible task id")
    if match[4]:
        return task_id, "REROLL", None, common(body)
    return task_id, "UPSCALE" if match[2].upper() == "U" else "VARIATION", int(match[3]), common(body)


def modal_request(body: dict[str, Any], limits: Limits) -> ModalRequest:
    task_id = required_task_id(body)
    prompt = prompt_field(body, limits, required=False)
    mask = None
    if body.get("maskBase64") not in (None, ""):
        mask = decode_data_url(body["maskBase64"], "maskBase64", limits.max_image_bytes, limits.max_image_pixels)
    return ModalRequest(task_id=task_id, prompt=prompt, mask=mask)


def task_ids(body: dict[str, Any], limit: int) -> list[int]:
    """`ids` of list-by-condition: strings or numbers; null or missing means none.

    Ids that cannot be task ids (not digits) are dropped like unknown ids; more than `limit`
    ids is a ValidationFailed.
    """
    ids = body.get("ids")
    if ids is None:
        return []
    if not isinstance(ids, list):
        raise BadRequest("ids must be an array of task ids")
    if len(ids) > limit:
        raise BadRequest(f"ids holds {len(ids)} ids; at most {limit} per request")
    # A dict keeps the first occurrence of each id in order; a list's `in` made 1,000 ids a million compares.
    parsed = (parse_task_id(value) for value in ids)
    return list(dict.fromkeys(i for i in parsed if i is not None))


def parse_task_id(value: Any) -> int | None:
    """A task id from a string or number, or None when it cannot be one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**63 else None
    number = parse_digits(value.strip()) if isinstance(value, str) else None
    return number if number is not None and 0 < number < 2**63 else None


#: Longest number read from a request, in digits: no id or count needs more, and int() refuses over 4,300.
MAX_DIGITS = 20


def parse_digits(text: str) -> int | None:
    """`text` as a whole number when it is only ASCII digits (at most MAX_DIGITS), else None.

    str.isdigit() alone also takes '²' and other Unicode digits, which int() refuses.
    """
    if len(text) <= MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None
