"""Midjourney's buttons: the sets it shows under each kind of result, and what a click means.

Custom ids follow Midjourney's formats exactly (midjourney-proxy-protocol.md §4.8), so a
client that reads `buttons` from any midjourney-proxy gets the same ids from mjq.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app import protocol
from app.protocol import button

INPAINT = "INPAINT"  # Vary (Region): a VARIATION whose mask limits what changes
KEYCAPS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")
PAN_EMOJI = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}


def grid_buttons(hash_: str) -> list[dict[str, Any]]:
    """Under a 2×2 grid (IMAGINE, VARIATION, REROLL, BLEND, ZOOM, PAN): U1–U4, 🔄, V1–V4."""
    ups = [button(f"MJ::JOB::upsample::{i}::{hash_}", label=f"U{i}") for i in range(1, 5)]
    reroll = button(f"MJ::JOB::reroll::0::{hash_}::SOLO", emoji="🔄")
    variations = [button(f"MJ::JOB::variation::{i}::{hash_}", label=f"V{i}") for i in range(1, 5)]
    return [*ups, reroll, *variations]


def upscale_buttons(hash_: str, with_upscalers: bool = True) -> list[dict[str, Any]]:
    """Under an upscaled image (Midjourney v6): upscalers, varies, zooms, pans and ❤️."""
    out = []
    if with_upscalers:
        out += [button(f"MJ::JOB::upsample_v6_2x_subtle::1::{hash_}::SOLO", label="Upscale (Subtle)"),
                button(f"MJ::JOB::upsample_v6_2x_creative::1::{hash_}::SOLO", label="Upscale (Creative)")]
    out += [
        button(f"MJ::JOB::low_variation::1::{hash_}::SOLO", label="Vary (Subtle)", emoji="🪄"),
        button(f"MJ::JOB::high_variation::1::{hash_}::SOLO", label="Vary (Strong)", emoji="🪄"),
        button(f"MJ::Inpaint::1::{hash_}::SOLO", label="Vary (Region)", emoji="🖌️"),
        button(f"MJ::Outpaint::50::1::{hash_}::SOLO", label="Zoom Out 2x", emoji="🔍"),
        button(f"MJ::Outpaint::75::1::{hash_}::SOLO", label="Zoom Out 1.5x", emoji="🔍"),
        button(f"MJ::CustomZoom::{hash_}", label="Custom Zoom", emoji="🔍"),
        *(button(f"MJ::JOB::pan_{d}::1::{hash_}::SOLO", emoji=e) for d, e in PAN_EMOJI.items()),
        button(f"MJ::BOOKMARK::{hash_}", emoji="❤️"),
    ]
    return out


def describe_buttons() -> list[dict[str, Any]]:
    """Under a /describe result: 1️⃣–4️⃣ (imagine that prompt), 🔄 retry, 🎉 Imagine all."""
    return [*(button(f"MJ::Job::PicReader::{i}", emoji=KEYCAPS[i - 1]) for i in range(1, 5)),
            button("MJ::Picread::Retry", emoji="🔄"),
            button("MJ::Job::PicReader::all", label="Imagine all", emoji="🎉")]


def shorten_buttons(hash_: str) -> list[dict[str, Any]]:
    """Under a /shorten result: 1️⃣–5️⃣ (imagine that prompt) and Show Details."""
    return [*(button(f"MJ::Job::PromptAnalyzer::{i}", emoji=KEYCAPS[i - 1]) for i in range(1, 6)),
            button(f"MJ::Job::PromptAnalyzerExtended::{hash_}", label="Show Details")]


@dataclass(frozen=True)
class Click:
    """What a button means: the action the new task records and how the upstream runs it."""

    action: str             # IMAGINE, UPSCALE, VARIATION, REROLL, ZOOM, PAN, INPAINT, DESCRIBE, SHORTEN, BOOKMARK
    kind: str               # the simulator's and drivers' name for the operation
    index: int | None = None
    zoom: float | None = None
    direction: str | None = None
    always_modal: bool = False
    remix_modal: bool = False  # opens a modal when the account is in Remix mode

    def needs_modal(self, remix: bool) -> bool:
        return self.always_modal or (self.remix_modal and remix)


_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^MJ::JOB::upsample::([1-4])::[\w-]+$"),
     lambda m: Click(protocol.UPSCALE, "upscale", index=int(m[1]))),
    (re.compile(r"^MJ::JOB::upsample_v\w*?_(subtle|creative|2x|4x)::1::[\w-]+(?:::SOLO)?$"),
     lambda m: Click(protocol.UPSCALE, f"upscale_{m[1]}")),
    (re.compile(r"^MJ::JOB::variation::([1-4])::[\w-]+(?:::SOLO)?$"),
     lambda m: Click(protocol.VARIATION, "variation", index=int(m[1]), remix_modal=True)),
    (re.compile(r"^MJ::JOB::(low|high)_variation::1::[\w-]+::SOLO$"),
     lambda m: Click(protocol.VARIATION, f"{m[1]}_variation", remix_modal=True)),
    (re.compile(r"^MJ::JOB::reroll::0::[\w-]+::SOLO$"),
     lambda m: Click(protocol.REROLL, "reroll", remix_modal=True)),
    (re.compile(r"^MJ::Outpaint::(50|75)::1::[\w-]+::SOLO$"),
     lambda m: Click(protocol.ZOOM, "zoom", zoom=2.0 if m[1] == "50" else 1.5)),
    (re.compile(r"^MJ::CustomZoom::[\w-]+$"), lambda m: Click(protocol.ZOOM, "custom_zoom", always_modal=True)),
    (re.compile(r"^MJ::JOB::pan_(left|right|up|down)::1::[\w-]+::SOLO$"),
     lambda m: Click(protocol.PAN, "pan", direction=m[1], remix_modal=True)),
    (re.compile(r"^MJ::Inpaint::1::[\w-]+::SOLO$"), lambda m: Click(INPAINT, "inpaint", always_modal=True)),
    (re.compile(r"^MJ::BOOKMARK::[\w-]+$"), lambda m: Click("BOOKMARK", "bookmark")),
    (re.compile(r"^MJ::Job::PicReader::([1-4])$"),
     lambda m: Click(protocol.IMAGINE, "picreader", index=int(m[1]), always_modal=True)),
    (re.compile(r"^MJ::Job::PicReader::all$"), lambda m: Click(protocol.IMAGINE, "picreader_all")),
    (re.compile(r"^MJ::Picread::Retry$"), lambda m: Click(protocol.DESCRIBE, "describe")),
    (re.compile(r"^MJ::Job::PromptAnalyzer::([1-5])$"),
     lambda m: Click(protocol.IMAGINE, "prompt_analyzer", index=int(m[1]), always_modal=True)),
    (re.compile(r"^MJ::Job::PromptAnalyzerExtended(?:::[\w-]+)?$"),
     lambda m: Click(protocol.SHORTEN, "shorten_details")),
]


def parse_custom_id(custom_id: str) -> Click | None:
    """The meaning of a button's custom id, or None when mjq does not know it."""
    for pattern, make in _PATTERNS:
        match = pattern.match(custom_id)
        if match:
            return make(match)
    return None


def legacy_custom_id(buttons: list[dict[str, Any]], action: str, index: int | None) -> str | None:
    """The custom id `/submit/change` means: UPSCALE n → Un, VARIATION n → Vn, REROLL → 🔄."""
    wanted = {protocol.UPSCALE: f"MJ::JOB::upsample::{index}::", protocol.VARIATION: f"MJ::JOB::variation::{index}::",
              protocol.REROLL: "MJ::JOB::reroll::0::"}[action]
    for b in buttons:
        if b.get("customId", "").startswith(wanted):
            return str(b["customId"])
    return None


def label_of(buttons: list[dict[str, Any]], custom_id: str) -> str:
    """How a button reads (its label, else its emoji), for task descriptions like `/up <id> U2`."""
    for b in buttons:
        if b.get("customId") == custom_id:
            return str(b.get("label") or b.get("emoji") or custom_id)
    return custom_id
