"""Reading Midjourney's Discord messages: pure functions, no I/O.

`read_message(message)` turns one MESSAGE_CREATE/UPDATE payload into a `Reading`: what
state the job is in (start, progress, final, queued, failed…), the parsed prompt and mode,
the job hash (from the attachment file name, signed query string stripped first), the
buttons and, for errors, the failReason and what should happen to the account.

Formats: midjourney-proxy-protocol.md §4.7–§4.10, including the 2024–25 forms that put
`[(Open on website for full quality)](<…>)` before the mode and add a `-#` footer line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app.protocol import button

# Reading states.
START = "start"          # the job exists upstream (Waiting to start, or the first message of an interaction)
PROGRESS = "progress"    # NN% with a preview
FINAL = "final"          # the result image is attached
DESCRIBED = "described"  # a /describe result embed
SHORTENED = "shortened"  # a /shorten result embed
QUEUED = "queued"        # Midjourney queued the job itself: keep waiting
FAILED = "failed"        # the job failed; `fail_reason` says why
NOTICE = "notice"        # a message about the job that changes nothing (warnings, paused)
OTHER = "other"          # not a job message mjq reads

# What an error means for the account (besides failing the job).
DISABLE_ACCOUNT = "disable"
CREDITS_EXHAUSTED = "credits"

#: Embed colour Midjourney uses for errors (0xFF0000).
RED = 16711680
#: Embed colours of warnings, which change nothing (midjourney-proxy's 0xF7CB73, Plus' 0xFFFF00).
WARNING_COLOURS = (16239475, 16776960)
#: Titles that fail the job.
FAILING_TITLES = ("Invalid parameter", "Invalid prompt", "Banned prompt detected", "Invalid link", "Queue full",
                  "Request cancelled due to", "Could not complete", "Action needed to continue", "Invalid")
#: Titles that fail the job and take the account out of service until an operator looks.
DISABLING_TITLES = ("Pending mod message", "Blocked", "Plan Cancelled", "Subscription required",
                    "Action required to continue")
CAPTCHA_PATH = "/captcha/embedded/"
KEYCAPS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")

_HEAD_RE = re.compile(r"^\*\*(?P<prompt>.*)\*\* - (?P<rest>.*)$", re.S)
_REST_RE = re.compile(
    r"^(?:(?P<verb>Variations|Remix|Upscaled|Upscaling|Zoom Out|Pan (?:Left|Right|Up|Down)|Image #(?P<image>\d))"
    r"(?: \((?P<detail>[^()]*)\))?(?: by)? )?<@!?(?P<user>\d+)>(?P<tail>.*)$", re.S)
_LINK_RE = re.compile(r"\[[^\]]*\]\(<?[^)>\s]*>?\)")
_PAREN_RE = re.compile(r"\(([^()]*)\)")
_PERCENT_RE = re.compile(r"^(\d{1,3})%$")
_MODE_RE = re.compile(r"^(fast|relaxed|relax|turbo)(, stealth)?$", re.I)
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SEED_RE = re.compile(r"\*\*Job ID\*\*:?\s*(?P<job>[0-9a-f-]{36}).*?\*\*seed\*\*:?\s*(?P<seed>\d+)", re.S | re.I)
_URL_RE = re.compile(r"<?https?://\S+?>?(?=\s|$)")
_PARAMS_RE = re.compile(r"\s--[a-z].*$", re.I | re.S)


@dataclass(frozen=True)
class Content:
    """The parsed first line of a job message: `**prompt** - <verb> (detail) by <@user> (status) (mode)`."""

    prompt: str
    kind: str                 # imagine | variation | upscale | image | zoom | pan
    detail: str | None = None  # Strong/Subtle/Region, Subtle/Creative/2x/4x, left/right/up/down, image index
    remix: bool = False
    percent: int | None = None
    waiting: bool = False     # (Waiting to start)
    stopped: bool = False     # (Stopped)
    paused: bool = False      # (paused)
    mode: str | None = None   # fast | relaxed | turbo
    stealth: bool = False
    in_progress: bool = False  # "Upscaling by": a job still running


@dataclass
class Reading:
    """What one message says about a job."""

    state: str
    content: Content | None = None
    percent: int | None = None
    image_url: str | None = None
    job_hash: str | None = None
    buttons: list[dict[str, Any]] = field(default_factory=list)
    fail_reason: str | None = None
    account_action: str | None = None
    text: str | None = None            # describe / shorten result text (the embed description)
    prompts: list[str] = field(default_factory=list)


def strip_footer(content: str) -> str:
    """The content without the `-#` small-print lines Midjourney appends since 2024."""
    return "\n".join(line for line in content.split("\n") if not line.lstrip().startswith("-# ")).strip()


def parse_content(content: str) -> Content | None:
    """The job line of a Midjourney message, or None when it is not one."""
    head = _HEAD_RE.match(strip_footer(content or ""))
    if head is None:
        return None
    rest = _REST_RE.match(head["rest"].strip())
    if rest is None:
        return None
    verb, detail = rest["verb"], rest["detail"]
    kind, remix, in_progress = "imagine", False, False
    if verb in ("Variations", "Remix"):
        kind, remix = "variation", verb == "Remix"
    elif verb in ("Upscaled", "Upscaling"):
        kind, in_progress = "upscale", verb == "Upscaling"
    elif verb == "Zoom Out":
        kind = "zoom"
    elif verb and verb.startswith("Pan "):
        kind, detail = "pan", verb[4:].lower()
    elif rest["image"]:
        kind, detail = "image", rest["image"]
    values: dict[str, Any] = {}
    for token in _PAREN_RE.findall(_LINK_RE.sub(" ", rest["tail"])):
        token = token.strip()
        percent, mode = _PERCENT_RE.match(token), _MODE_RE.match(token)
        if percent:
            values["percent"] = min(int(percent[1]), 100)
        elif mode:
            values["mode"] = "relaxed" if mode[1].lower().startswith("relax") else mode[1].lower()
            values["stealth"] = bool(mode[2])
        elif token.lower() == "waiting to start":
            values["waiting"] = True
        elif token.lower() == "stopped":
            values["stopped"] = True
        elif token.lower() == "paused":
            values["paused"] = True
    return Content(prompt=head["prompt"].strip(), kind=kind, detail=detail, remix=remix, in_progress=in_progress,
                   **values)


def job_hash(url_or_name: str | None) -> str | None:
    """Midjourney's job UUID from an attachment URL or file name (None when it carries none).

    The signed query string (`?ex=…&is=…&hm=…`) is dropped first: with it the `_grid_0.webp`
    test fails and the upstream's fallback returns garbage (§4.10).
    """
    if not url_or_name:
        return None
    name = urlsplit(url_or_name).path.rsplit("/", 1)[-1]
    if name.endswith("_grid_0.webp"):
        candidate = name[: -len("_grid_0.webp")]
    else:
        stem = name.rsplit(".", 1)[0]
        candidate = stem.rsplit("_", 1)[-1]
    candidate = candidate.lower()
    return candidate if _UUID_RE.match(candidate) else None


def buttons_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message's buttons as mjq shows them (customId, emoji, label, type, style); link buttons are left out."""
    out = []
    for row in message.get("components") or []:
        for comp in (row.get("components") or []) if row.get("type") == 1 else [row]:
            if comp.get("type") != 2 or not comp.get("custom_id"):
                continue
            emoji = (comp.get("emoji") or {}).get("name") or ""
            out.append(button(str(comp["custom_id"]), label=str(comp.get("label") or ""), emoji=str(emoji),
                              style=int(comp.get("style") or 2)))
    return out


def first_attachment(message: dict[str, Any]) -> str | None:
    attachments = message.get("attachments") or []
    return str(attachments[0].get("url") or attachments[0].get("proxy_url")) if attachments else None


def keycap_prompts(text: str) -> list[str]:
    """The numbered prompts of a describe or shorten embed (`1️⃣ prompt`), in order."""
    parts = re.split("(" + "|".join(KEYCAPS) + ")", text)
    prompts = []
    for i in range(1, len(parts) - 1, 2):
        prompt = parts[i + 1].strip()
        if prompt:
            prompts.append(prompt)
    return prompts


def _embed_error(embed: dict[str, Any], message: dict[str, Any]) -> Reading | None:
    title = str(embed.get("title") or "").strip()
    description = str(embed.get("description") or "").strip()
    reason = f"[{title}] {description}".strip()
    if CAPTCHA_PATH in str(message.get("iframe_path") or "") or CAPTCHA_PATH in str(embed.get("url") or ""):
        return Reading(FAILED, fail_reason=f"[{title or 'Captcha'}] human verification required",
                       account_action=DISABLE_ACCOUNT)
    if not title:
        return None
    if title.startswith("Job queued"):
        return Reading(QUEUED, text=description)
    if title.startswith("Credits exhausted"):
        return Reading(FAILED, fail_reason=reason, account_action=CREDITS_EXHAUSTED)
    if any(title.startswith(t) for t in DISABLING_TITLES):
        return Reading(FAILED, fail_reason=reason, account_action=DISABLE_ACCOUNT)
    if embed.get("color") == RED or any(title.startswith(t) for t in FAILING_TITLES):
        return Reading(FAILED, fail_reason=reason)
    return None


def _alert(embed: dict[str, Any]) -> Reading | None:
    """midjourney-proxy's rule for an embed of another colour than an error's or a warning's: one with a title and
    a text, not a link preview, fails the job whose message it answers or edits (the Tracker decides whose)."""
    title = str(embed.get("title") or "").strip()
    description = str(embed.get("description") or "").strip()
    if not title or not description or embed.get("type") == "link" or embed.get("color") in WARNING_COLOURS:
        return None
    return Reading(FAILED, fail_reason=f"[{title}] {description}")


def read_message(message: dict[str, Any]) -> Reading:
    """Classify one Midjourney bot message (a MESSAGE_CREATE or MESSAGE_UPDATE `d`)."""
    content = str(message.get("content") or "")
    embeds = message.get("embeds") or []
    url = first_attachment(message)
    buttons = buttons_of(message)
    if CAPTCHA_PATH in str(message.get("iframe_path") or ""):
        return Reading(FAILED, fail_reason="[Action required to continue] human verification required",
                       account_action=DISABLE_ACCOUNT)
    if embeds:
        error = _embed_error(embeds[0], message)
        if error is not None:
            return error
        description = str(embeds[0].get("description") or "")
        footer = str((embeds[0].get("footer") or {}).get("text") or "")
        if "## Shortened prompts" in description or "shortened prompts" in footer.lower():
            prompts = keycap_prompts(description.split("## Shortened prompts", 1)[-1])
            return Reading(SHORTENED, text=description, prompts=prompts, buttons=buttons,
                           job_hash=_hash_from_buttons(buttons))
        if embeds[0].get("image") and not content:
            prompts = keycap_prompts(description)
            image = str((embeds[0].get("image") or {}).get("url") or "") or None
            if prompts:
                return Reading(DESCRIBED, text=description, prompts=prompts, buttons=buttons, image_url=image)
            return Reading(START, image_url=image)
    if content.startswith("Failed"):
        return Reading(FAILED, fail_reason=content.strip())
    if embeds and not content.strip():
        alert = _alert(embeds[0])
        if alert is not None:
            return alert
    parsed = parse_content(content)
    if parsed is None:
        return Reading(OTHER, image_url=url, job_hash=job_hash(url), buttons=buttons)
    if parsed.stopped:
        return Reading(FAILED, content=parsed, fail_reason="[Stopped] Midjourney stopped the job")
    reading = Reading(OTHER, content=parsed, image_url=url, job_hash=job_hash(url), buttons=buttons)
    if parsed.waiting:
        reading.state = START
    elif parsed.percent is not None or parsed.in_progress:
        reading.state, reading.percent = PROGRESS, parsed.percent
    elif parsed.paused:
        reading.state = NOTICE
    elif url is not None:
        reading.state = FINAL
    else:
        reading.state = START
    return reading


def _hash_from_buttons(buttons: list[dict[str, Any]]) -> str | None:
    for b in buttons:
        tail = str(b["customId"]).rsplit("::", 1)[-1]
        if _UUID_RE.match(tail):
            return tail
    return None


def parse_seed(content: str) -> tuple[str, str] | None:
    """(job hash, seed) from the bot's ✉️ DM: `**Job ID**: <uuid>` … `**seed** <digits>`."""
    match = _SEED_RE.search(content or "")
    return (match["job"].lower(), match["seed"]) if match else None


def links(prompt: str) -> list[str]:
    """The URLs in `prompt`, in order, without their angle brackets."""
    return [m.group().strip("<>") for m in _URL_RE.finditer(prompt)]


def same_rendering(a: str, b: str) -> bool:
    """Whether two of Midjourney's renderings of a prompt (its start and its final message) are one job's:
    the same primary prompt and the same links (a blend's prompt is its links alone)."""
    return primary_prompt(a) == primary_prompt(b) and links(a) == links(b)


def primary_prompt(prompt: str) -> str:
    """A prompt reduced for comparison (last resort only): no --params, URLs as <link>, no whitespace.

    Midjourney rewrites prompts (collapses spaces, `—` to `--`, drops default params, shortens
    URLs), so equal primary prompts say little; mjq matches by nonce, message id and job hash first.
    """
    text = prompt.replace("—", "--")
    text = _PARAMS_RE.sub("", " " + text)
    text = _URL_RE.sub("<link>", text).replace("<<link>>", "<link>")
    return re.sub(r"\s+", "", text).lower()
