"""The Midjourney bot of the fake Discord: what each interaction produces, over the gateway.

Behaves as the reference (§4.3–§4.9) describes the real bot: a slash command gets
INTERACTION_CREATE/SUCCESS, a start message carrying the nonce, progress edits
(`(31%) (fast)` with a `<hash>_grid_0.webp` preview behind a signed URL), then the
progress message is deleted and the final image is a new message without the nonce, with
the real button set of app/buttons.py. U1–U4 answer with one nonce-bearing final
(`Image #N`); the HD upscalers run as `Upscaling (Subtle) by` and end `Upscaled (Subtle) by`.
Remix (Reroll, Variation, Pan of a user in Remix mode), Custom Zoom, PicReader and
PromptAnalyzer open a modal (INTERACTION_MODAL_CREATE), Vary (Region) an iframe modal;
describe's 🔄 describes again, shorten's Show Details answers the token weights with the
shorten buttons. Images are real: the simulator's Pillow code renders them, so geometry
checks hold.

Prompt markers script faults: `[fake:banned]`, `[fake:invalid]`, `[fake:credits]`,
`[fake:blocked]`, `[fake:captcha]` (error embeds), `[fake:filter]` (red embed mid-job),
`[fake:queued]` (a Job queued embed first; the job's later messages carry no nonce),
`[fake:slow]` (a job of `slow_seconds`).
"""
from __future__ import annotations

import base64
import re
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PIL import Image

from app.buttons import describe_buttons, grid_buttons, parse_custom_id, shorten_buttons, upscale_buttons
from workers.drivers import sim_images as sim
from workers.drivers.base import Job
from workers.drivers.discord_parse import job_hash as job_hash_of
from workers.drivers.discord_payloads import INSIGHT_FACE_APP
from workers.drivers.sim_jobs import BLEND_ASPECT, produce

if TYPE_CHECKING:
    from tests.fakes.fake_discord import FakeDiscord, User

SIGNED = "?ex=6655a1b2&is=66545032&hm=9f1e2d3c4b5a6978&"
PROGRESS_STEPS = (31, 62, 93)
RED, YELLOW = 16711680, 16776960
ERRORS = {
    "[fake:banned]": ("Banned prompt detected", "Sorry! Our AI moderator thinks this prompt is probably against our "
                                                "community standards.", RED),
    "[fake:invalid]": ("Invalid parameter", "Unrecognized parameter(s): `--fake`", RED),
    "[fake:credits]": ("Credits exhausted", "You have run out of fast hours.", RED),
    "[fake:blocked]": ("Pending mod message", "You have a pending moderation message.", YELLOW),
    "[fake:captcha]": ("Action required to continue", "Please verify you are human.", YELLOW),
}
_MODE_FLAG_RE = re.compile(r"\s--(fast|relax|turbo)\b", re.I)
_ZOOM_RE = re.compile(r"--zoom\s+([0-9.]+)")
_URL_RE = re.compile(r"https?://\S+")


class MemoryImages:
    """The simulator's ImageStore interface over a dict (the fake keeps its own images)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> str:
        self.data[key] = data
        return self.url(key)

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def url(self, key: str) -> str:
        return f"mem://{key}"


def components(buttons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """mjq's button dicts as Discord message components (rows of at most five)."""
    rows = []
    for i in range(0, len(buttons), 5):
        comps = []
        for b in buttons[i:i + 5]:
            comp: dict[str, Any] = {"type": 2, "style": b["style"], "custom_id": b["customId"]}
            if b["label"]:
                comp["label"] = b["label"]
            if b["emoji"]:
                comp["emoji"] = {"name": b["emoji"]}
            comps.append(comp)
        rows.append({"type": 1, "components": comps})
    return rows


class FakeMidjourney:
    def __init__(self, discord: FakeDiscord, job_seconds: float) -> None:
        self.discord = discord
        self.job_seconds = job_seconds
        self.slow_seconds = 12.0
        self.files: dict[str, bytes] = {}   # CDN path (and uploads/…) -> bytes
        self.messages: dict[str, dict[str, Any]] = {}
        self.images = MemoryImages()        # message id -> rendered image, for follow-ups
        self.seeds: dict[str, str] = {}     # job hash -> seed
        self.modals: dict[str, dict[str, Any]] = {}
        self.faces: dict[str, str] = {}     # idname -> image key
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _later(self, fn: Callable[[], None]) -> None:
        threading.Thread(target=fn, daemon=True).start()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # -- messages --------------------------------------------------------------------------
    def _message(self, user: User, content: str = "", channel: str | None = None, **extra: Any) -> dict[str, Any]:
        message = {"id": self.discord.snowflake(), "channel_id": channel or user.channel_id,
                   "guild_id": user.guild_id, "author": {"id": "936929561302675456", "bot": True},
                   "content": content, "attachments": [], "embeds": [], "components": [], "flags": 0,
                   "type": 0, **extra}
        return message

    def _attach(self, message: dict[str, Any], filename: str, data: bytes) -> None:
        path = f"{message['channel_id']}/{message['id']}/{filename}"
        self.files[path] = data
        message["attachments"] = [{"id": self.discord.snowflake(), "filename": filename, "size": len(data),
                                   "url": f"{self.discord.url}/attachments/{path}{SIGNED}",
                                   "proxy_url": f"{self.discord.url}/attachments/{path}{SIGNED}"}]

    def _send(self, user: User, event: str, message: dict[str, Any]) -> None:
        if event == "MESSAGE_DELETE":
            self.messages.pop(message["id"], None)
        else:
            self.messages[message["id"]] = message
        self.discord.dispatch(user, event, message)

    def store_upload_message(self, user: User, channel: str, uploaded: str, filename: str) -> dict[str, Any]:
        message = self._message(user, f"upload image: {uploaded}", channel=channel,
                                author={"id": user.id})
        self._attach(message, filename, self.files[f"uploads/{uploaded}"])
        self.messages[message["id"]] = message
        return message

    # -- interactions ----------------------------------------------------------------------
    def interaction(self, user: User, payload: dict[str, Any]) -> str | None:
        """Start what `payload` asks for; returns an error message for an unknown target (else None)."""
        kind, nonce, data = payload.get("type"), str(payload.get("nonce")), payload.get("data") or {}
        interaction_id = self.discord.snowflake()
        name = str(data.get("name") or data.get("custom_id") or "")
        self.discord.dispatch(user, "INTERACTION_CREATE", {"id": interaction_id, "nonce": nonce})
        if kind == 2:
            options = {o["name"]: o["value"] for o in data.get("options") or []}
            uploads = [self.files.get(f"uploads/{a['uploaded_filename']}") for a in data.get("attachments") or []]
            job = {"user": user, "nonce": nonce, "iid": interaction_id, "name": name, "channel": payload["channel_id"]}
            if payload.get("application_id") == INSIGHT_FACE_APP:
                self._later(lambda: self._insight_face(job, options, uploads))
            else:
                self._later(lambda: self._slash(job, options, uploads))
        elif kind == 3:
            parent = self.messages.get(str(payload.get("message_id")))
            custom_id = str(data.get("custom_id"))
            if parent is None or custom_id not in _custom_ids(parent):
                self.discord.dispatch(user, "INTERACTION_FAILURE", {"id": interaction_id, "nonce": nonce})
                return None
            self._later(lambda: self._click(user, nonce, interaction_id, parent, custom_id))
            return None  # the click answers with INTERACTION_SUCCESS or a modal (see _click)
        elif kind == 5:
            modal = self.modals.pop(str(data.get("id")), None)
            if modal is None:
                return "Unknown interaction"
            value = str(data["components"][0]["components"][0]["value"])
            self.discord.dispatch(user, "INTERACTION_SUCCESS", {"id": interaction_id, "nonce": nonce})
            self._later(lambda: modal["then"](nonce, interaction_id, value))
            return None
        self.discord.dispatch(user, "INTERACTION_SUCCESS", {"id": interaction_id, "nonce": nonce})
        return None

    def _slash(self, job: dict[str, Any], options: dict[str, Any], uploads: list[bytes | None]) -> None:
        user, name = job["user"], job["name"]
        if name == "imagine":
            prompt = str(options.get("prompt", ""))
            self._job(job, prompt, "", lambda seed, h: produce(_sim_job({"kind": "imagine"}, prompt), self.images,
                                                                  seed, h).image, grid_buttons)
        elif name == "blend":
            keys = [f"blend/{uuid.uuid4()}.png" for data in uploads if data]
            for key, data in zip(keys, [d for d in uploads if d], strict=True):
                self.images.put(key, data)
            dims = {v: k for k, v in {"PORTRAIT": "--ar 2:3", "SQUARE": "--ar 1:1",
                                      "LANDSCAPE": "--ar 3:2"}.items()}[str(options.get("dimensions", "--ar 1:1"))]
            links = " ".join(f"<https://s.mj.run/{uuid.uuid4().hex[:10]}>" for _ in keys)
            self._job(job, f"{links} {options.get('dimensions', '')}", "", lambda seed, h: sim.blend(
                [sim.open_image(self.images.data[k]) for k in keys], BLEND_ASPECT[dims], seed), grid_buttons)
        elif name == "describe":
            self._describe(job, uploads[0] or b"")
        elif name == "shorten":
            markdown, _ = sim.shorten_text(str(options.get("prompt", "")))
            h = str(uuid.uuid4())
            message = self._message(user, nonce=job["nonce"], interaction_metadata={"id": job["iid"], "name": name})
            message["embeds"] = [{"type": "rich", "description": markdown, "color": 0,
                                  "footer": {"text": "Click on a button to imagine one of the shortened prompts"}}]
            message["components"] = components(shorten_buttons(h))
            self._sleep(self.job_seconds / 3)
            self._send(user, "MESSAGE_CREATE", message)
        elif name == "show":
            self._show(job, str(options.get("job_id", "")))

    # -- one image job ---------------------------------------------------------------------
    def _job(self, job: dict[str, Any], prompt: str, verb: str, render: Callable[[int, str], Image.Image],
             buttons: Callable[[str], list[dict[str, Any]]], parent: dict[str, Any] | None = None,
             nonce: bool = True) -> None:
        """start → progress edits → delete → final, as the bot runs every grid and upscale job."""
        user = job["user"]
        shown = _echo(prompt)
        for marker, (title, description, colour) in ERRORS.items():
            if marker in prompt:
                self._sleep(0.2)
                message = self._message(user, nonce=job["nonce"])
                message["embeds"] = [{"type": "rich", "title": title, "description": description, "color": colour}]
                self._send(user, "MESSAGE_CREATE", message)
                return
        mode = "relaxed" if "--relax" in prompt else "turbo" if "--turbo" in prompt else "fast"
        by = f"{verb} by " if verb else ""
        running = by.replace("Upscaled", "Upscaling")  # an HD upscale says "Upscaling (Subtle) by" until it ends
        length = self.slow_seconds if "[fake:slow]" in prompt else self.job_seconds
        h = str(uuid.uuid4())
        seed = sim.seed_for(prompt, job["nonce"])
        self.seeds[h] = str(seed)
        reference = {"message_reference": {"message_id": parent["id"]}} if parent else {}
        carries_nonce = nonce and "[fake:queued]" not in prompt
        if "[fake:queued]" in prompt:
            queued = self._message(user, nonce=job["nonce"])
            queued["embeds"] = [{"type": "rich", "title": "Job queued", "color": YELLOW,
                                 "description": "Your job will start as soon as one of your other jobs finishes."}]
            self._send(user, "MESSAGE_CREATE", queued)
            self._sleep(length / 3)
        start = self._message(user, f"**{shown}** - {running}<@{user.id}> (Waiting to start)",
                              interaction_metadata={"id": job["iid"], "name": job["name"]}, **reference)
        if carries_nonce:
            start["nonce"] = job["nonce"]
        self._sleep(0.1)
        self._send(user, "MESSAGE_CREATE", start)
        image = render(seed, h)
        for percent in PROGRESS_STEPS:
            self._sleep(length / (len(PROGRESS_STEPS) + 1))
            if "[fake:filter]" in prompt and percent > 50:
                error = self._message(user, message_reference={"message_id": start["id"]})
                error["embeds"] = [{"type": "rich", "title": "Request cancelled due to output filters", "color": RED,
                                    "description": "Sorry! Our AI moderators feel your prompt might violate our "
                                                   "community standards."}]
                self._send(user, "MESSAGE_CREATE", error)
                return
            start = {**start, "content": f"**{shown}** - {running}<@{user.id}> [(Open on website for full quality)]"
                                         f"(<https://www.midjourney.com/jobs/{h}>) ({percent}%) ({mode})"}
            self._attach(start, f"{h}_grid_0.webp", sim.to_webp(sim.preview(image, percent)))
            self._send(user, "MESSAGE_UPDATE", start)
        self._sleep(length / (len(PROGRESS_STEPS) + 1))
        self._send(user, "MESSAGE_DELETE", {"id": start["id"], "channel_id": start["channel_id"]})
        final = self._message(user, f"**{shown}** - {by}<@{user.id}> ({mode})\n-# Create, explore, and organize on "
                                    "[midjourney.com](<https://midjourney.com/imagine>)", **reference)
        self._finish(user, final, image, h, buttons)

    def _finish(self, user: User, message: dict[str, Any], image: Image.Image, h: str,
                buttons: Callable[[str], list[dict[str, Any]]]) -> None:
        self._attach(message, f"fakeuser_{_slug(message['content'])}_{h}.png", sim.to_png(image))
        message["components"] = components(buttons(h))
        self.images.put(f"msg/{message['id']}.png", sim.to_png(image))
        self._send(user, "MESSAGE_CREATE", message)

    # -- clicks ----------------------------------------------------------------------------
    def _click(self, user: User, nonce: str, iid: str, parent: dict[str, Any], custom_id: str) -> None:
        click = parse_custom_id(custom_id)
        assert click is not None, custom_id
        prompt = _prompt_of(parent)
        key = f"msg/{parent['id']}.png"
        job = {"user": user, "nonce": nonce, "iid": iid, "name": custom_id, "channel": parent["channel_id"]}
        inputs: dict[str, Any] = {"kind": click.kind, "parentImage": key, "index": click.index,
                                  "direction": click.direction, "zoom": click.zoom}

        def run(verb: str, kind_inputs: dict[str, Any], buttons: Callable[[str], list[dict[str, Any]]],
                text: str = prompt, job: dict[str, Any] = job) -> None:
            self._job(job, text, verb, lambda seed, h: produce(_sim_job(kind_inputs, text), self.images, seed, h)
                      .image, buttons, parent=parent)

        def modal(custom: str, field: str, value: str, then: Callable[[str, str, str], None]) -> None:
            modal_id = self.discord.snowflake()
            self.modals[modal_id] = {"then": then}
            self.discord.dispatch(user, "INTERACTION_MODAL_CREATE", {
                "id": modal_id, "nonce": nonce, "custom_id": custom, "title": "Modal",
                "application": {"id": "936929561302675456"},
                "components": [{"type": 1, "components": [{"type": 4, "custom_id": field, "value": value}]}]})

        def remixed(verb: str, kind_inputs: dict[str, Any], buttons: Callable[[str], list[dict[str, Any]]]
                    ) -> Callable[[str, str, str], None]:
            return lambda n, i, value: run(verb, kind_inputs, buttons, value, {**job, "nonce": n, "iid": i})

        h = _hash_of(custom_id)
        opens_modal = click.always_modal or (click.remix_modal and user.remix)
        if not opens_modal:
            self.discord.dispatch(user, "INTERACTION_SUCCESS", {"id": iid, "nonce": nonce})
        if click.kind == "upscale":
            image = sim.upscale(sim.open_image(self.images.data[key]), int(click.index or 1))
            self._sleep(0.3)
            message = self._message(user, f"**{_echo(prompt)}** - Image #{click.index} <@{user.id}>", nonce=nonce,
                                    message_reference={"message_id": parent["id"]})
            self._finish(user, message, image, str(uuid.uuid4()), upscale_buttons)
        elif click.kind.startswith("upscale_"):
            label = {"subtle": "Subtle", "creative": "Creative", "2x": "2x", "4x": "4x"}[click.kind[8:]]
            run(f"Upscaled ({label})", inputs, lambda hh: upscale_buttons(hh, with_upscalers=False))
        elif click.kind in ("variation", "low_variation", "high_variation", "reroll", "pan"):
            verb = {"variation": "Variations", "low_variation": "Variations (Subtle)",
                    "high_variation": "Variations (Strong)", "reroll": "",
                    "pan": f"Pan {str(click.direction).title()}"}[click.kind]
            kind_inputs = {**inputs, "kind": "imagine"} if click.kind == "reroll" else inputs
            if user.remix:
                custom = {"reroll": f"MJ::ImagineModal::{parent['id']}",
                          "pan": f"MJ::PanModal::{click.direction}::{h}::1"}.get(
                    click.kind, f"MJ::RemixModal::{h}::{click.index or 1}::1")
                field = {"reroll": "MJ::ImagineModal::new_prompt", "pan": "MJ::PanModal::prompt"}.get(
                    click.kind, "MJ::RemixModal::new_prompt")
                modal(custom, field, prompt, remixed(verb.replace("Variations", "Remix"), kind_inputs, grid_buttons))
            else:
                run(verb, kind_inputs, grid_buttons)
        elif click.kind == "zoom":
            run("Zoom Out", inputs, grid_buttons, f"{prompt} --zoom {click.zoom:g}")
        elif click.kind == "custom_zoom":
            def zoom_then(n: str, i: str, value: str) -> None:
                match = _ZOOM_RE.search(value)
                run("Zoom Out", {**inputs, "kind": "custom_zoom", "zoom": float(match[1]) if match else 2.0},
                    grid_buttons, value, {**job, "nonce": n, "iid": i})
            modal(f"MJ::OutpaintCustomZoomModal::{h}", "MJ::OutpaintCustomZoomModal::prompt", f"{prompt} --zoom 2",
                  zoom_then)
        elif click.kind == "inpaint":
            token = uuid.uuid4().hex
            self.modals[f"iframe:{token}"] = {"job": job, "inputs": inputs, "parent": parent, "run": run}
            self.discord.dispatch(user, "INTERACTION_IFRAME_MODAL_CREATE", {
                "id": self.discord.snowflake(), "nonce": nonce, "custom_id": f"MJ::iframe::{token}",
                "title": "Vary (Region)", "application": {"id": "936929561302675456"}})
        elif click.kind in ("picreader", "prompt_analyzer"):
            prompts = _embed_prompts(parent)
            value = prompts[int(click.index or 1) - 1] if prompts else prompt
            name = "Picreader" if click.kind == "picreader" else "PromptAnalyzer"
            modal(f"MJ::{name}::Modal::{click.index}", f"MJ::{name}::Modal::PromptField", value,
                  lambda n, i, text: self._job({**job, "nonce": n, "iid": i, "name": "imagine"}, text, "",
                                               lambda seed, hh: sim.render_grid(text, seed), grid_buttons))
        elif click.kind == "describe":
            self._describe(job, self.files.get(_image_path(parent)) or b"")
        elif click.kind == "shorten_details":
            message = self._message(user, nonce=nonce)
            details = "\n".join(f"{w} 1.0" for w in _prompt_of(parent).split()[:5])
            message["embeds"] = [{"type": "rich", "color": 0, "description": "## Important tokens\n(details)\n\n"
                                  f"## Token weights\n{details}\n\n## Shortened prompts\n1️⃣ {prompt}",
                                  "footer": {"text": "Click on a button to imagine one of the shortened prompts"}}]
            message["components"] = components(shorten_buttons(h))
            self._send(user, "MESSAGE_CREATE", message)

    def inpaint(self, body: dict[str, Any]) -> bool:
        """Midjourney's iframe app: the mask and prompt of a Vary (Region) job."""
        pending = self.modals.pop(f"iframe:{body.get('customId')}", None)
        if pending is None:
            return False
        mask_key = f"mask/{uuid.uuid4()}.png"
        self.images.put(mask_key, base64.b64decode(str(body["mask"])))
        job = {**pending["job"], "nonce": "", "iid": self.discord.snowflake()}
        prompt = str(body.get("prompt") or _prompt_of(pending["parent"]))
        self._later(lambda: pending["run"]("Variations (Region)", {**pending["inputs"], "mask": mask_key},
                                           grid_buttons, prompt, job))
        return True

    # -- describe, show, seed, face swap ---------------------------------------------------
    def _describe(self, job: dict[str, Any], data: bytes) -> None:
        user = job["user"]
        message = self._message(user, nonce=job["nonce"], interaction_metadata={"id": job["iid"], "name": "describe"})
        self._attach(message, f"{uuid.uuid4().hex}.png", data)
        image_url = message.pop("attachments")[0]["url"]
        message["attachments"] = []
        message["embeds"] = [{"type": "rich", "image": {"url": image_url}, "color": 0}]
        self._send(user, "MESSAGE_CREATE", message)
        self._sleep(self.job_seconds / 2)
        prompts = sim.describe_prompts(sim.open_image(data))
        message = {**message, "embeds": [{"type": "rich", "image": {"url": image_url}, "color": 0,
                                          "description": sim.describe_text(prompts)}],
                   "components": components(describe_buttons())}
        self._send(user, "MESSAGE_UPDATE", message)

    def _show(self, job: dict[str, Any], job_hash: str) -> None:
        user = job["user"]
        original = next((m for m in list(self.messages.values())
                         if m.get("attachments") and m["attachments"][0]["filename"].endswith(f"_{job_hash}.png")),
                        None)
        message = self._message(user, nonce=job["nonce"], channel=job["channel"])
        if original is None:
            message["embeds"] = [{"type": "rich", "title": "Invalid job", "description": "No such job.", "color": RED}]
            self._send(user, "MESSAGE_CREATE", message)
            return
        message["content"] = original["content"]
        message["attachments"] = original["attachments"]
        message["components"] = original["components"]
        self._send(user, "MESSAGE_CREATE", message)

    def reaction(self, user: User, channel: str, message_id: str, emoji: str) -> None:
        message = self.messages.get(message_id)
        if emoji != "✉️" or message is None or not message.get("attachments"):
            return
        job_hash = job_hash_of(message["attachments"][0]["filename"])

        def envelope() -> None:
            self._sleep(0.2)
            dm = self._message(user, f"**{_prompt_of(message)}**\n**Job ID**: {job_hash}\n**seed** "
                                     f"{self.seeds.get(job_hash, '0')}", channel=user.dm_channel_id)
            self._send(user, "MESSAGE_CREATE", dm)
        self._later(envelope)

    def _insight_face(self, job: dict[str, Any], options: dict[str, Any], uploads: list[bytes | None]) -> None:
        user = job["user"]
        self._sleep(0.2)
        if job["name"] == "saveid":
            face = f"face/{uuid.uuid4()}.png"
            self.images.put(face, uploads[0] or b"")
            self.faces[str(options.get("idname"))] = face
            self._send(user, "MESSAGE_CREATE", self._message(
                user, f"idname {options.get('idname')} created", nonce=job["nonce"],
                author={"id": INSIGHT_FACE_APP, "bot": True}))
            return
        source = self.faces.get(str(options.get("idnames")))
        target = f"target/{uuid.uuid4()}.png"
        self.images.put(target, uploads[0] or b"")
        result = produce(_sim_job({"kind": "swap_face", "source": [source], "target": [target]}, ""), self.images,
                         7, "").image
        assert result is not None
        message = self._message(user, f"<@{user.id}>", nonce=job["nonce"], author={"id": INSIGHT_FACE_APP, "bot": True})
        self._attach(message, f"{uuid.uuid4().hex}.png", sim.to_png(result))
        self._send(user, "MESSAGE_CREATE", message)


def _sim_job(inputs: dict[str, Any], prompt: str) -> Job:
    return Job(task_id=0, action="IMAGINE", prompt=prompt, mode="FAST", bot_type="MID_JOURNEY", nonce="0",
               account_id="fake", inputs={k: v for k, v in inputs.items() if v is not None})


def _echo(prompt: str) -> str:
    """The prompt as Midjourney shows it: mode flags gone, links shortened, spaces collapsed."""
    text = _MODE_FLAG_RE.sub("", " " + prompt)
    text = _URL_RE.sub(lambda m: m[0] if "s.mj.run" in m[0] else f"<https://s.mj.run/{uuid.uuid4().hex[:10]}>", text)
    return " ".join(text.split())


def _prompt_of(message: dict[str, Any]) -> str:
    match = re.match(r"^\*\*(.*)\*\* - ", str(message.get("content") or ""), re.S)
    return match[1] if match else ""


def _slug(content: str) -> str:
    return "_".join(re.findall(r"[a-z0-9]+", _prompt_of({"content": content}).lower())[:6]) or "image"


def _custom_ids(message: dict[str, Any]) -> set[str]:
    return {c.get("custom_id") for row in message.get("components") or [] for c in row.get("components") or []}


def _hash_of(custom_id: str) -> str:
    parts = [p for p in custom_id.split("::") if re.match(r"^[0-9a-f-]{36}$", p)]
    return parts[0] if parts else ""


def _embed_prompts(message: dict[str, Any]) -> list[str]:
    from workers.drivers.discord_parse import keycap_prompts

    description = str(((message.get("embeds") or [{}])[0]).get("description") or "")
    return keycap_prompts(description.split("## Shortened prompts", 1)[-1])


def _image_path(message: dict[str, Any]) -> str:
    embeds = message.get("embeds") or [{}]
    url = str((embeds[0].get("image") or {}).get("url") or "")
    return url.split("/attachments/", 1)[-1].split("?", 1)[0]

