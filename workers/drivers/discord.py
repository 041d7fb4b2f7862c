"""The discord driver: runs jobs on a Discord user account through the Midjourney bot.

`submit` sends the interaction (uploads first for describe, blend and pad images; for a
button, the click on the parent's message, then the modal or Vary (Region) iframe when
Midjourney opens one) and returns `discord:<nonce>:<stream id>`: the nonce to follow and
the account's event-stream position just before the first call. `follow` reads the
account's stream from there (workers/drivers/discord_events.py, written by the gateway
process) and feeds a `Tracker` (discord_follow.py) until the job ends, so a redelivered job
follows from the recorded reference without submitting again. Results are copied into
mjq's ImageStore: clients never see an expiring Discord URL.
"""
from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from redis import Redis
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.buttons import parse_custom_id
from app.images import ImageStore
from app.models import Task
from config import Settings
from workers.dispatch import Dispatcher
from workers.drivers import discord_parse as dp
from workers.drivers import discord_rest
from workers.drivers.base import Job, Reporter, UpstreamError
from workers.drivers.discord_accounts import AccountRetirer
from workers.drivers.discord_events import EventStream
from workers.drivers.discord_follow import EXPECT_DESCRIBE, EXPECT_IMAGE, EXPECT_SHORTEN, EXPECT_SWAP, Step, Tracker
from workers.drivers.discord_payloads import (
    BLEND_DIMENSIONS,
    INSIGHT_FACE_APP,
    app_for,
    attachment,
    click,
    modal_submit,
    new_nonce,
    option,
)
from workers.drivers.discord_rest import DiscordRest, DiscordUrls, image_option
from workers.events import Listener
from workers.scheduler import Scheduler

log = logging.getLogger(__name__)

#: Longest wait for Midjourney's answer to a click that may open a modal, seconds.
MODAL_WAIT_SECONDS = 30.0
#: How often a follower checks that its task is still open (cancelled, timed out by the sweeper), seconds.
OPEN_CHECK_SECONDS = 5.0
_MODE_FLAG_RE = re.compile(r"\s--(?:fast|relax|turbo)\b", re.I)
MODE_FLAGS = {"FAST": "--fast", "TURBO": "--turbo", "RELAX": "--relax"}
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
                 "gif": "image/gif"}


class TaskLookup:
    """The two database reads the driver needs: the parent's Discord message and whether a task is still open."""

    def __init__(self, session_factory: sessionmaker) -> None:
        self.session_factory = session_factory

    def parent_properties(self, task_id: int) -> dict[str, Any]:
        with self.session_factory() as session:
            task = session.get(Task, task_id)
            parent = session.get(Task, task.parent_id) if task is not None and task.parent_id else None
            return dict(parent.properties or {}) if parent is not None else {}

    def is_open(self, task_id: int) -> bool:
        with self.session_factory() as session:
            task = session.get(Task, task_id)
            return task is not None and task.status in protocol.OPEN_STATUSES


def encode_ref(nonce: str, since: str) -> str:
    return f"discord:{nonce}:{since}"


def decode_ref(ref: str) -> tuple[str, str]:
    """(nonce, stream id) of a reference made by `encode_ref`. Raises UpstreamError for another driver's."""
    parts = ref.split(":", 2)
    if len(parts) != 3 or parts[0] != "discord":
        raise UpstreamError(f"not a discord reference: {ref!r}")
    return parts[1], parts[2]


def with_mode(prompt: str, mode: str) -> str:
    """The prompt with the job's mode flag (Midjourney picks fast/relax/turbo from it), others removed."""
    return f"{_MODE_FLAG_RE.sub('', ' ' + prompt).strip()} {MODE_FLAGS.get(mode, '--fast')}".strip()


@dataclass
class DiscordDriver:
    images: ImageStore
    redis: Redis
    http: requests.Session
    lookup: TaskLookup
    urls: DiscordUrls = DiscordUrls()
    retirer: AccountRetirer | None = None
    modal_wait_seconds: float = MODAL_WAIT_SECONDS
    clock: Callable[[], float] = time.monotonic

    name = "discord"

    def _rest(self, job: Job) -> DiscordRest:
        s = job.account_settings
        if not s.get("userToken"):
            raise UpstreamError(f"account {job.account_id} has no readable Discord token (is MJQ_SECRET_KEY set?)")
        return DiscordRest(self.http, self.urls, str(s["userToken"]), str(s.get("guildId") or ""),
                           str(s.get("channelId") or ""), str(s.get("userAgent") or ""), self.redis, job.account_id)

    # -- submit ---------------------------------------------------------------------------
    def submit(self, job: Job) -> str:
        stream = EventStream(self.redis, job.account_id)
        since = stream.last_id()
        rest = self._rest(job)
        inputs, app = job.inputs, app_for(job.bot_type)
        kind = str(inputs.get("kind") or "imagine")
        if inputs.get("customId"):
            return encode_ref(self._click(job, rest, stream, since, str(inputs["customId"])), since)
        if kind == "imagine":
            pads = [rest.post_image_message(name, rest.upload(name, data, ctype))
                    for name, data, ctype in self._files(job, inputs.get("images") or [])]
            text = with_mode(" ".join([*pads, job.prompt]), job.mode)
            rest.slash_command(app, "imagine", [option("prompt", text)], job.nonce)
        elif kind == "describe":
            [(name, data, ctype)] = self._files(job, (inputs.get("images") or [])[:1])
            uploaded = rest.upload(name, data, ctype)
            rest.slash_command(app, "describe", [image_option("image", 0)], job.nonce,
                               [attachment(0, name, uploaded)])
        elif kind == "blend":
            files = self._files(job, inputs.get("images") or [])
            slots = [rest.upload(name, data, ctype) for name, data, ctype in files]
            options = [image_option(f"image{i + 1}", i) for i in range(len(files))]
            options.append(option("dimensions", BLEND_DIMENSIONS[str(inputs.get("dimensions") or "SQUARE")]))
            rest.slash_command(app, "blend", options, job.nonce,
                               [attachment(i, f[0], u) for i, (f, u) in enumerate(zip(files, slots, strict=True))])
        elif kind == "shorten":
            rest.slash_command(app, "shorten", [option("prompt", job.prompt)], job.nonce)
        elif kind == "swap_face":
            self._swap_face(job, rest, stream, since)
        else:
            raise UpstreamError(f"the discord driver cannot run {kind!r}")
        return encode_ref(job.nonce, since)

    def _files(self, job: Job, keys: list[str]) -> list[tuple[str, bytes, str]]:
        out = []
        for i, key in enumerate(keys):
            data = self.images.get(key)
            if data is None:
                raise UpstreamError(f"input image {key} is not stored")
            ext = key.rsplit(".", 1)[-1].lower()
            out.append((f"{job.task_id}-{i}.{ext}", data, CONTENT_TYPES.get(ext, "application/octet-stream")))
        return out

    def _click(self, job: Job, rest: DiscordRest, stream: EventStream, since: str, custom_id: str) -> str:
        """Click the parent's button; answer the modal or iframe Midjourney opens. Returns the nonce to follow."""
        parent = self.lookup.parent_properties(job.task_id)
        if not parent.get("messageId"):
            raise UpstreamError(f"the parent of task {job.task_id} has no Discord message to click on")
        app = app_for(job.bot_type)
        rest.interact(click(app, custom_id, str(parent["messageId"]), int(parent.get("flags") or 0), job.nonce,
                            rest.channel_id, rest.guild_id))
        meaning = parse_custom_id(custom_id)
        if meaning is not None and not meaning.always_modal and not meaning.remix_modal:
            return job.nonce
        answer = self._first_answer(stream, since, job.nonce)
        if answer is None or answer.type in ("INTERACTION_SUCCESS", "MESSAGE_CREATE"):
            return job.nonce
        if answer.type == "INTERACTION_FAILURE":
            raise UpstreamError("[Interaction failed] Midjourney did not accept the click")
        if str(answer.data.get("title") or "").startswith("Action required to continue"):
            return job.nonce  # a captcha: follow() fails the job and retires the account
        if answer.type == "INTERACTION_IFRAME_MODAL_CREATE":
            mask = self.images.get(str(job.inputs.get("mask") or ""))
            if mask is None:
                raise UpstreamError("Vary (Region) needs a mask and none is stored")
            token = str(answer.data.get("custom_id") or "").rsplit("::", 1)[-1]
            rest.inpaint_submit(token, base64.b64encode(mask).decode(), job.prompt)
            return job.nonce
        modal_nonce = new_nonce()
        rest.interact(modal_submit(app, answer.data, job.prompt, modal_nonce, rest.channel_id, rest.guild_id))
        return modal_nonce

    def _first_answer(self, stream: EventStream, since: str, nonce: str, wanted: tuple[str, ...] = (
            "INTERACTION_SUCCESS", "INTERACTION_FAILURE", "INTERACTION_MODAL_CREATE",
            "INTERACTION_IFRAME_MODAL_CREATE", "MESSAGE_CREATE")) -> Any:
        """The first event of `wanted` types answering interaction `nonce`, or None in time."""
        deadline = self.clock() + self.modal_wait_seconds
        for event in stream.follow(since, until=lambda: self.clock() > deadline):
            if event.type in wanted and str(event.data.get("nonce") or "") == nonce:
                return event
        return None

    def _swap_face(self, job: Job, rest: DiscordRest, stream: EventStream, since: str) -> None:
        """InsightFace bot: /saveid the face, wait for its answer, then /swapid onto the target."""
        [(src_name, src, src_type)] = self._files(job, (job.inputs.get("source") or [])[:1])
        [(dst_name, dst, dst_type)] = self._files(job, (job.inputs.get("target") or [])[:1])
        idname = f"mjq{job.task_id % 10_000_000}"
        save_nonce = new_nonce()
        rest.slash_command(INSIGHT_FACE_APP, "saveid", [option("idname", idname), image_option("image", 0)],
                           save_nonce, [attachment(0, src_name, rest.upload(src_name, src, src_type))])
        answer = self._first_answer(stream, since, save_nonce, ("INTERACTION_FAILURE", "MESSAGE_CREATE"))
        if answer is None or answer.type == "INTERACTION_FAILURE":
            raise UpstreamError("[InsightFace] the face could not be saved")
        rest.slash_command(INSIGHT_FACE_APP, "swapid", [option("idnames", idname), image_option("image", 0)],
                           job.nonce, [attachment(0, dst_name, rest.upload(dst_name, dst, dst_type))])

    # -- follow ---------------------------------------------------------------------------
    def follow(self, job: Job, upstream_ref: str, reporter: Reporter) -> None:
        nonce, since = decode_ref(upstream_ref)
        rest = self._rest(job)
        kind = str(job.inputs.get("kind") or "imagine")
        expect = {"describe": EXPECT_DESCRIBE, "shorten": EXPECT_SHORTEN, "shorten_details": EXPECT_SHORTEN,
                  "swap_face": EXPECT_SWAP}.get(kind, EXPECT_IMAGE)
        parent = self.lookup.parent_properties(job.task_id) if job.inputs.get("customId") else {}
        tracker = Tracker(nonce, expect, job.prompt, str(parent.get("messageId") or "") or None,
                          ("variation", "Region") if kind == "inpaint" else None)
        stream = EventStream(self.redis, job.account_id)
        cursor, next_check = since, self.clock() + OPEN_CHECK_SECONDS
        while not tracker.done:
            for event in stream.read(cursor):
                cursor = event.id
                for step in tracker.feed(event):
                    self._report(job, rest, tracker, step, reporter)
                if tracker.done:
                    return
            if self.clock() > next_check:
                next_check = self.clock() + OPEN_CHECK_SECONDS
                if not self.lookup.is_open(job.task_id):
                    log.info("task %s finished elsewhere (cancelled or timed out); no longer following", job.task_id)
                    return

    def _report(self, job: Job, rest: DiscordRest, tracker: Tracker, step: Step, reporter: Reporter) -> None:
        reading, message = step.reading, step.message
        if step.kind == "failed":
            if step.account_action and self.retirer is not None:
                self.retirer.apply(step.account_action, job.account_id, step.reason)
            raise UpstreamError(step.reason)
        assert reading is not None
        prompt = reading.content.prompt if reading.content else None
        if step.kind == "started":
            reporter.started({"progressMessageId": str(message.get("id")), **({"finalPrompt": prompt} if prompt
                                                                              else {})})
        elif step.kind == "progress":
            url = self._copy(rest, reading.image_url, f"{job.task_id}/progress-{step.percent}.webp", required=False)
            reporter.progress(int(step.percent or 0), url, {"messageHash": reading.job_hash} if reading.job_hash
                              else None)
        elif step.kind == "succeeded":
            reporter.succeeded(*self._result(job, rest, tracker, message, reading))

    def _result(self, job: Job, rest: DiscordRest, tracker: Tracker, message: dict[str, Any], reading: dp.Reading
                ) -> tuple[str | None, list[dict[str, Any]], dict[str, Any], str | None]:
        """(image URL in mjq's store, buttons, properties, promptEn) of the final message."""
        properties: dict[str, Any] = {"messageId": str(message.get("id")), "flags": int(message.get("flags") or 0),
                                      "progressMessageId": tracker.progress_message_id or str(message.get("id"))}
        job_hash = reading.job_hash or tracker.job_hash
        if job_hash:
            properties["messageHash"] = job_hash
        if reading.text is not None:  # describe, shorten
            properties.update(finalPrompt=reading.text, prompts=reading.prompts)
            keys = job.inputs.get("images") or []
            url = self.images.url(keys[0]) if reading.state == dp.DESCRIBED and keys else None
            if url is not None and reading.image_url:
                properties["originImageUrl"] = reading.image_url  # the `origin` image mode shows it
            return url, reading.buttons, properties, reading.text if reading.state == dp.DESCRIBED else None
        if reading.content is not None:
            properties["finalPrompt"] = reading.content.prompt
        name = (reading.image_url or "").split("?", 1)[0].rsplit(".", 1)
        ext = name[-1].lower() if len(name) == 2 and name[-1].lower() in CONTENT_TYPES else "png"
        url = self._copy(rest, reading.image_url, f"{job.task_id}/{job_hash or properties['messageId']}.{ext}",
                         required=True)
        properties["originImageUrl"] = reading.image_url  # Discord's CDN URL (signed, it expires): the `origin` mode
        return url, reading.buttons, properties, None

    def _copy(self, rest: DiscordRest, source: str | None, key: str, required: bool) -> str | None:
        """Copy an attachment into mjq's ImageStore; None (or UpstreamError when `required`) if it cannot be read."""
        if not source:
            if required:
                raise UpstreamError("the result message has no image")
            return None
        try:
            return self.images.put(key, rest.download(source, discord_rest.DOWNLOAD_RETRY_SECONDS if required else ()))
        except UpstreamError:
            if required:
                raise
            log.info("preview %s not copied", key)
            return None


def build_discord_driver(settings: Settings, images: ImageStore, session_factory: sessionmaker, redis: Redis,
                         scheduler: Scheduler | None, dispatcher: Dispatcher | None,
                         listeners: list[Listener]) -> DiscordDriver:
    """The driver as a worker process runs it (one HTTP session per process, Discord's URLs from settings)."""
    urls = DiscordUrls(api=settings.discord_api_url, gateway=settings.discord_gateway_url,
                       cdn=settings.discord_cdn_url, upload=settings.discord_upload_url,
                       inpaint=settings.discord_inpaint_url)
    retirer = AccountRetirer(session_factory, redis, scheduler, dispatcher, listeners,
                             settings.discord_credits_exhausted)
    return DiscordDriver(images, redis, requests.Session(), TaskLookup(session_factory), urls, retirer)
