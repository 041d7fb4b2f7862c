"""The midjourney-proxy wire vocabulary: codes, statuses, actions, and the JSON forms.

Clients (new-api, one-api, chat front ends) parse these bytes, some by exact text
(`"code":22`), so JSON is emitted compactly and every task key is always present.
"""
from __future__ import annotations

import json
from typing import Any

# Result codes of the submit envelope (ReturnCode in novicezk/midjourney-proxy).
CODE_SUCCESS = 1
CODE_NOT_FOUND = 3
CODE_VALIDATION_ERROR = 4
CODE_FAILURE = 9
CODE_EXISTED = 21
CODE_IN_QUEUE = 22
CODE_QUEUE_REJECTED = 23
CODE_BANNED_PROMPT = 24

# Task statuses.
NOT_START = "NOT_START"
SUBMITTED = "SUBMITTED"
IN_PROGRESS = "IN_PROGRESS"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
MODAL = "MODAL"
CANCEL = "CANCEL"
TERMINAL_STATUSES = frozenset({SUCCESS, FAILURE, CANCEL})
OPEN_STATUSES = frozenset({NOT_START, SUBMITTED, IN_PROGRESS})

# Task actions.
IMAGINE = "IMAGINE"
UPSCALE = "UPSCALE"
VARIATION = "VARIATION"
REROLL = "REROLL"
DESCRIBE = "DESCRIBE"
BLEND = "BLEND"
ZOOM = "ZOOM"
PAN = "PAN"
SHORTEN = "SHORTEN"
SWAP_FACE = "SWAP_FACE"

BOT_TYPES = ("MID_JOURNEY", "NIJI_JOURNEY")
BOT_TYPE_ALIASES = {"MJ": "MID_JOURNEY", "NIJI": "NIJI_JOURNEY"}

# The keys of a task object, in midjourney-proxy's order; every one is always emitted.
TASK_KEYS = (
    "id", "action", "status", "prompt", "promptEn", "description", "state", "submitTime",
    "startTime", "finishTime", "imageUrl", "progress", "failReason", "properties", "buttons",
)


def dumps(value: Any) -> str:
    """Compact JSON (no spaces after `:` and `,`), UTF-8 text kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def envelope(code: int, description: str, result: Any = None, properties: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """The submit answer `{code, description, result, properties}` (properties always an object)."""
    return {"code": code, "description": description, "result": result, "properties": properties or {}}


def button(custom_id: str, label: str = "", emoji: str = "", style: int = 2) -> dict[str, Any]:
    """A Discord button as midjourney-proxy Plus shows it; label and emoji are never null."""
    return {"customId": custom_id, "emoji": emoji, "label": label, "type": 2, "style": style}
