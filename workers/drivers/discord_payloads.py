"""Interaction payloads as the Discord web client sends them for Midjourney (§4.3), and the command table.

Command ids are stable; versions change whenever Midjourney redeploys, so `discord_rest`
reads both from the guild's application-command index and falls back to this table (the
reference's values) when the index cannot be read.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

MIDJOURNEY_APP = "936929561302675456"
NIJI_APP = "1022952195194359889"
INSIGHT_FACE_APP = "1090660574196674713"
#: The web client's constant `session_id` on interactions (not the gateway session).
INTERACTION_SESSION_ID = "f1a313a09ce079ce252459dc70231f30"
#: Discord's epoch (2015-01-01) in Unix milliseconds: snowflakes count from it.
DISCORD_EPOCH_MS = 1420070400000


@dataclass(frozen=True)
class Command:
    id: str
    version: str


#: Fallback (application, command name) -> id and version, from the reference (§4.3).
FALLBACK_COMMANDS: dict[tuple[str, str], Command] = {
    (MIDJOURNEY_APP, "imagine"): Command("938956540159881230", "1237876415471554623"),
    (MIDJOURNEY_APP, "describe"): Command("1092492867185950852", "1237876415471554625"),
    (MIDJOURNEY_APP, "blend"): Command("1062880104792997970", "1237876415471554624"),
    (MIDJOURNEY_APP, "shorten"): Command("1121575372539039774", "1247736572414001223"),
    (MIDJOURNEY_APP, "show"): Command("1169435442328911902", "1247736572414001224"),
    (MIDJOURNEY_APP, "info"): Command("972289487818334209", "1237876415735660565"),
    (MIDJOURNEY_APP, "settings"): Command("1000850743479255081", "1237876415790055475"),
    (NIJI_APP, "imagine"): Command("1023054140580057099", "1248805223892254774"),
    (NIJI_APP, "blend"): Command("1061216934374424697", "1248805223892254775"),
    (NIJI_APP, "describe"): Command("1092683500743831652", "1248805223892254776"),
    (NIJI_APP, "shorten"): Command("1121575453916942376", "1248805223892254777"),
    (NIJI_APP, "show"): Command("1023054140580057101", "1248805223892254781"),
    (NIJI_APP, "info"): Command("1023054140580057102", "1248805223892254782"),
    (NIJI_APP, "settings"): Command("1023054140634579025", "1248805223925940264"),
}
#: Blend's `dimensions` option per mjq's BLEND dimensions.
BLEND_DIMENSIONS = {"PORTRAIT": "--ar 2:3", "SQUARE": "--ar 1:1", "LANDSCAPE": "--ar 3:2"}


def app_for(bot_type: str) -> str:
    """The bot a job runs on: niji for NIJI_JOURNEY, else Midjourney."""
    return NIJI_APP if bot_type == "NIJI_JOURNEY" else MIDJOURNEY_APP


def new_nonce(clock_ms: int | None = None) -> str:
    """A fresh snowflake-shaped nonce (milliseconds since Discord's epoch, shifted, plus random bits)."""
    now = clock_ms if clock_ms is not None else time.time_ns() // 1_000_000
    return str((now - DISCORD_EPOCH_MS) << 22 | secrets.randbits(22))


def option(name: str, value: Any, kind: int = 3) -> dict[str, Any]:
    """A slash-command option: type 3 string, 11 attachment (value = attachment index)."""
    return {"type": kind, "name": name, "value": value}


def attachment(index: int, filename: str, uploaded_filename: str) -> dict[str, Any]:
    return {"id": str(index), "filename": filename, "uploaded_filename": uploaded_filename}


def slash(app: str, command: Command, name: str, options: list[dict[str, Any]], nonce: str, channel_id: str,
          guild_id: str | None, attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A type 2 interaction (slash command). `guild_id` None for a DM (/show in the bot's DM channel)."""
    payload: dict[str, Any] = {
        "type": 2, "application_id": app, "channel_id": channel_id, "session_id": INTERACTION_SESSION_ID,
        "nonce": nonce,
        "data": {"version": command.version, "id": command.id, "name": name, "type": 1, "options": options,
                 "attachments": attachments or []},
    }
    if guild_id:
        payload["guild_id"] = guild_id
    return payload


def click(app: str, custom_id: str, message_id: str, message_flags: int, nonce: str, channel_id: str,
          guild_id: str) -> dict[str, Any]:
    """A type 3 interaction: a button click on the parent's message."""
    return {"type": 3, "guild_id": guild_id, "channel_id": channel_id, "message_id": message_id,
            "application_id": app, "session_id": INTERACTION_SESSION_ID, "nonce": nonce,
            "message_flags": message_flags, "data": {"component_type": 2, "custom_id": custom_id}}


def modal_submit(app: str, modal: dict[str, Any], value: str, nonce: str, channel_id: str, guild_id: str
                 ) -> dict[str, Any]:
    """A type 5 interaction answering INTERACTION_MODAL_CREATE `modal` with `value` in its (first) text field."""
    field_id = ""
    for row in modal.get("components") or []:
        for comp in row.get("components") or []:
            if comp.get("type") == 4:
                field_id = str(comp.get("custom_id") or "")
                break
        if field_id:
            break
    return {"type": 5, "application_id": str(modal.get("application", {}).get("id") or app),
            "channel_id": channel_id, "guild_id": guild_id, "session_id": INTERACTION_SESSION_ID, "nonce": nonce,
            "data": {"id": str(modal.get("id") or ""), "custom_id": str(modal.get("custom_id") or ""),
                     "components": [{"type": 1, "components": [{"type": 4, "custom_id": field_id,
                                                                "value": value}]}]}}
