"""The mjproxy driver: jobs run on an upstream midjourney-proxy (another mjq, a Plus, a relay).

An account is a base URL (optionally with a mode prefix, `http://host/mj-relax`) and a secret.

- **Submit** maps the job onto the upstream's endpoint: imagine, describe, blend, shorten and
  face swap go to their `/submit/*` twins with the stored images as data URLs; a follow-up
  (any job whose inputs name a `customId`) is `/submit/action` on the parent's upstream
  task with that same custom id: mjq copies the upstream's buttons verbatim, so the id a
  client clicked on mjq is the upstream's own. A code-21 answer opens the modal upstream,
  which is completed at once with the job's prompt (and Vary (Region)'s mask). The
  returned reference `<account id>:<upstream task id>` is recorded before following, so a
  redelivered execution follows the same upstream task instead of submitting again.
- **Busy upstream** (code 23, or 3: no account): `UpstreamBusy` is raised at once; the
  executor decides (workers/executor.py): a new job moves to another eligible account, a
  follow-up (or a job with nowhere to go) is requeued on its account after a backoff.
- **Follow** reads the upstream task from the hub (hooks through Redis, batched polls, see
  mjproxy_watch.py) and maps every newer state onto the job: progress with the preview,
  then SUCCESS with the final image, buttons and properties, or the upstream's failReason.
  Images are copied into mjq's store under `<task id>/…`, so clients never depend on the
  upstream's URLs. There is no timeout here: the sweeper fails a job that stops moving,
  and the follower notices (the row is re-read every LIVENESS_CHECK_SECONDS) and stops; a
  job cancelled or timed out on mjq is cancelled upstream too.
"""
from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from sqlalchemy.orm import sessionmaker

from app import protocol
from app.images import CONTENT_TYPES, ImageStore, valid_key
from app.models import Task
from config import Settings
from workers.drivers.base import Job, Reporter, UpstreamError
from workers.drivers.mjproxy_client import Answer, Endpoint, UpstreamClient, UpstreamInvalid
from workers.drivers.mjproxy_watch import UpstreamWatch, callback_key, notify_url
from workers.events import ClaimLost

log = logging.getLogger(__name__)

#: Seconds between re-reads of the row while following (a cancel, or the sweeper's timeout).
LIVENESS_CHECK_SECONDS = 10.0
#: Tries of one image copy before the job fails (the upstream's store may lag its event).
IMAGE_TRIES = 3
IMAGE_RETRY_SECONDS = 1.0
#: Properties that describe the job on mjq's side and are never overwritten by the upstream's.
OWN_PROPERTIES = frozenset({"discordInstanceId", "nonce", "notifyHook", "mode", "botType", "customId", "remix"})
_RANK = {protocol.NOT_START: 0.0, protocol.MODAL: 0.0, protocol.SUBMITTED: 1.0, protocol.IN_PROGRESS: 2.0}
_PERCENT_RE = re.compile(r"^\s*(\d{1,3})(?:\.\d+)?\s*%\s*$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def split_ref(upstream_ref: str) -> tuple[str, str]:
    """(account id, upstream task id) of a recorded reference. Raises UpstreamError when malformed."""
    account_id, sep, upstream_id = upstream_ref.rpartition(":")
    if not sep or not account_id or not upstream_id:
        raise UpstreamError(f"[Internal Error] {upstream_ref!r} is not an mjproxy upstream reference")
    return account_id, upstream_id


def percent_of(progress: Any) -> int | None:
    """`"46%"` → 46; anything else (None, "", "Stopped") → None."""
    match = _PERCENT_RE.match(progress) if isinstance(progress, str) else None
    return min(int(match[1]), 100) if match else None


def rank(task: dict[str, Any]) -> float:
    """How far along an upstream task is: later states rank higher; every end state ranks highest."""
    status = task.get("status")
    if status in protocol.TERMINAL_STATUSES:
        return 10.0
    return _RANK.get(str(status), 0.0) + (percent_of(task.get("progress")) or 0) / 1000


class MjproxyDriver:
    """Runs jobs on upstream midjourney-proxies; see the module docstring for the mapping."""

    name = "mjproxy"

    def __init__(self, images: ImageStore, client: UpstreamClient, watch: UpstreamWatch,
                 session_factory: sessionmaker | None = None, callback_base: str = "", callback_key: str = "",
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 liveness_check_seconds: float = LIVENESS_CHECK_SECONDS) -> None:
        """`callback_base` + `callback_key` make the notify hook; without either, jobs are followed by polling."""
        self.images = images
        self.client = client
        self.watch = watch
        self.session_factory = session_factory
        self.callback_base = callback_base
        self.callback_key = callback_key
        self.sleep = sleep
        self.monotonic = monotonic
        self.liveness_check_seconds = liveness_check_seconds

    @classmethod
    def from_settings(cls, settings: Settings, images: ImageStore, session_factory: sessionmaker,
                      redis: Redis | None) -> MjproxyDriver:
        """The driver of a worker process: one HTTP session, one hub, the notify hook when configured."""
        client = UpstreamClient(settings.mjproxy_timeout_seconds)
        watch = UpstreamWatch(redis, client, settings.mjproxy_poll_seconds)
        return cls(images, client, watch, session_factory,
                   settings.mjproxy_callback_url or settings.effective_public_url,
                   callback_key(settings) if settings.mjproxy_notify else "")

    # -- submit ---------------------------------------------------------------------------
    def submit(self, job: Job) -> str:
        endpoint = Endpoint.of(job.account_settings)
        path, body = self._request(job, endpoint)
        answer = self._submit(endpoint, path, body)
        if path == "/submit/action" and answer.code == protocol.CODE_EXISTED:
            modal = {"taskId": answer.task_id, "prompt": job.prompt}
            if job.inputs.get("mask"):
                modal["maskBase64"] = self._data_url(job.inputs["mask"], "mask")
            answer = self._submit(endpoint, "/submit/modal", modal)
        log.info("task %s submitted to %s as upstream task %s (code %s)", job.task_id, endpoint.host,
                 answer.task_id, answer.code)
        # A job cancelled while this was on the wire is cancelled upstream by the executor, whose record of
        # the submit it refuses (`abandon` below).
        return f"{job.account_id}:{answer.task_id}"

    def abandon(self, job: Job, upstream_ref: str) -> None:
        """The job ended on mjq while it was submitted: cancel it upstream (workers/drivers/base.py)."""
        self._cancel_upstream_if_ended(job, Endpoint.of(job.account_settings), split_ref(upstream_ref)[1])

    def _submit(self, endpoint: Endpoint, path: str, body: dict[str, Any]) -> Answer:
        """One submit (again without the notify hook when the upstream refuses it). Raises UpstreamBusy (23, 3)
        or UpstreamError."""
        try:
            return self.client.submit(endpoint, path, body)
        except UpstreamInvalid as exc:
            if "notifyHook" not in body or "notifyhook" not in exc.description.lower():
                raise
            # Some upstreams (mjq among them) refuse hooks on IP addresses or private hosts: follow by polling.
            log.warning("%s refused the notify hook (%s); its jobs are followed by polling only", endpoint.host,
                        exc.description)
            return self.client.submit(endpoint, path, {k: v for k, v in body.items() if k != "notifyHook"})

    def _request(self, job: Job, endpoint: Endpoint) -> tuple[str, dict[str, Any]]:
        """The upstream path and body that run `job`. Raises UpstreamError for what it cannot map."""
        inputs = job.inputs
        common: dict[str, Any] = {"state": str(job.task_id)}
        if self.callback_base and self.callback_key:
            common["notifyHook"] = notify_url(self.callback_base, self.callback_key, job.account_id)
        if inputs.get("customId"):
            return "/submit/action", {"taskId": self._parent_upstream_id(job), "customId": inputs["customId"],
                                      **common}
        if endpoint.mode is None:
            # No mode prefix in the base URL: ask the upstream (mjq, Plus) for the job's mode; others ignore it.
            common["accountFilter"] = {"modes": [job.mode]}
        kind = inputs.get("kind", "imagine")
        images = list(inputs.get("images") or [])
        if kind == "imagine":
            return "/submit/imagine", {"prompt": job.prompt, "botType": job.bot_type,
                                       "base64Array": [self._data_url(k, "imagine") for k in images], **common}
        if kind == "describe" and images:
            return "/submit/describe", {"base64": self._data_url(images[0], "describe"), "botType": job.bot_type,
                                        **common}
        if kind == "blend":
            return "/submit/blend", {"base64Array": [self._data_url(k, "blend") for k in images],
                                     "dimensions": inputs.get("dimensions", "SQUARE"), "botType": job.bot_type,
                                     **common}
        if kind == "shorten":
            return "/submit/shorten", {"prompt": job.prompt, "botType": job.bot_type, **common}
        if kind == "swap_face" and inputs.get("source") and inputs.get("target"):
            return "/insight-face/swap", {"sourceBase64": self._data_url(inputs["source"][0], "face source"),
                                          "targetBase64": self._data_url(inputs["target"][0], "face target"),
                                          **common}
        raise UpstreamError(f"the mjproxy driver cannot run {kind!r} ({job.action}) without its inputs")

    def _parent_upstream_id(self, job: Job) -> str:
        """The upstream task a follow-up clicks on: its parent's, recorded on the parent's row."""
        parent_ref = None
        if self.session_factory is not None:
            with self.session_factory() as session:
                task = session.get(Task, job.task_id)
                parent = session.get(Task, task.parent_id) if task is not None and task.parent_id else None
                parent_ref = parent.upstream_id if parent is not None else None
        if not parent_ref:
            raise UpstreamError(f"task {job.task_id}'s parent has no upstream task to act on")
        account_id, upstream_id = split_ref(str(parent_ref))
        if account_id != job.account_id:
            raise UpstreamError(f"task {job.task_id}'s parent ran on account {account_id}, not {job.account_id}")
        return upstream_id

    def _data_url(self, key: str, what: str) -> str:
        data = self.images.get(key)
        if data is None:
            raise UpstreamError(f"the {what} image {key} is not stored")
        mime = CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "image/png")
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    # -- follow ---------------------------------------------------------------------------
    def follow(self, job: Job, upstream_ref: str, reporter: Reporter) -> None:
        account_id, upstream_id = split_ref(upstream_ref)
        endpoint = Endpoint.of(job.account_settings)
        watch = self.watch.open(account_id, endpoint, upstream_id)
        seen, started = -1.0, False
        next_check = self.monotonic() + self.liveness_check_seconds
        try:
            while True:
                task = watch.next(max(next_check - self.monotonic(), 0.0))
                if task is not None and rank(task) > seen:
                    seen = rank(task)
                    if self._apply(job, upstream_id, task, reporter, started):
                        return
                    started = started or task.get("status") == protocol.IN_PROGRESS
                if self.monotonic() >= next_check:
                    self._check_still_open(job)
                    next_check = self.monotonic() + self.liveness_check_seconds
        except ClaimLost:
            self._cancel_upstream_if_ended(job, endpoint, upstream_id)
            raise
        finally:
            self.watch.close(watch)

    def _apply(self, job: Job, upstream_id: str, task: dict[str, Any], reporter: Reporter, started: bool) -> bool:
        """Report one newer upstream state; True once the job ended. Raises UpstreamError on a failure."""
        status = task.get("status")
        properties = {k: v for k, v in (task.get("properties") or {}).items() if k not in OWN_PROPERTIES}
        properties["upstreamTaskId"] = upstream_id
        if status == protocol.IN_PROGRESS:
            percent = percent_of(task.get("progress"))
            if not percent:
                if not started:
                    reporter.started(properties)
                return False
            preview = self._copy_image(job, task.get("imageUrl"), f"progress-{percent}", required=False)
            reporter.progress(percent, preview, properties)
            return False
        if status == protocol.SUCCESS:
            image_url = self._copy_image(job, task.get("imageUrl"), None, required=True)
            if isinstance(task.get("imageUrl"), str):
                properties["originImageUrl"] = task["imageUrl"]  # the `origin` image mode shows it
            buttons = [b for b in task.get("buttons") or [] if isinstance(b, dict) and b.get("customId")]
            # The upstream's promptEn is news only where its bot wrote it (a describe's text, a blend's start
            # message); elsewhere it is what mjq sent, or that led by the upstream's links of the pad images.
            told = task.get("promptEn") if job.action in (protocol.DESCRIBE, protocol.BLEND) else None
            reporter.succeeded(image_url, buttons, properties, prompt_en=told or None)
            return True
        if status == protocol.FAILURE:
            raise UpstreamError(str(task.get("failReason") or "the upstream task failed without a reason"))
        if status == protocol.CANCEL:
            raise UpstreamError(f"[Upstream cancelled] {task.get('failReason') or 'the upstream task was cancelled'}")
        return False  # NOT_START, SUBMITTED, MODAL: nothing new for the client yet

    def _copy_image(self, job: Job, url: Any, name: str | None, required: bool) -> str | None:
        """Copy the upstream image at `url` into the store under `<task id>/<name or its file name>`.

        Raises UpstreamError when a `required` image cannot be fetched (previews are skipped instead).
        """
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return None
        tries = IMAGE_TRIES if required else 1
        for attempt in range(1, tries + 1):
            try:
                data, content_type = self.client.download(url)
                break
            except UpstreamError as exc:
                if attempt == tries:
                    if required:
                        raise
                    log.info("task %s: preview not copied: %s", job.task_id, exc)
                    return None
                self.sleep(IMAGE_RETRY_SECONDS * attempt)
        return self.images.put(self._image_key(job, url, name, content_type), data)

    def _image_key(self, job: Job, url: str, name: str | None, content_type: str) -> str:
        base = urlsplit(url).path.rsplit("/", 1)[-1]
        stem, dot, ext = base.rpartition(".")
        if not dot or ext.lower() not in CONTENT_TYPES:
            ext = next((e for e, t in CONTENT_TYPES.items() if t == content_type.split(";")[0].strip()), "png")
            stem = base or "image"
        stem = _UNSAFE_KEY_CHARS.sub("_", name or stem).strip("._-")[:96] or "image"
        key = f"{job.task_id}/{stem}.{ext.lower()}"
        inputs = {k for v in job.inputs.values() if isinstance(v, list) for k in v if isinstance(k, str)}
        if key in inputs or key == job.inputs.get("mask") or not valid_key(key):
            key = f"{job.task_id}/result-{stem}.{ext.lower()}"  # never overwrite what the job was given
        return key

    def _check_still_open(self, job: Job) -> None:
        """Raises ClaimLost when the row ended without us (cancelled, or failed by the sweeper)."""
        if self.session_factory is None:
            return
        with self.session_factory() as session:
            task = session.get(Task, job.task_id, populate_existing=True)
            ended = task is None or task.status in protocol.TERMINAL_STATUSES
            what = task.status if task is not None else "gone"
        if ended:
            raise ClaimLost(f"task {job.task_id} is {what}; stopped following it upstream")

    def _cancel_upstream_if_ended(self, job: Job, endpoint: Endpoint, upstream_id: str) -> bool:
        """When the job ended on mjq while running upstream (a cancel, the sweeper's timeout), stop the upstream
        job too and return True. A claim lost to another execution of the same job leaves the row open and the
        upstream alone."""
        if self.session_factory is None:
            return False
        with self.session_factory() as session:
            task = session.get(Task, job.task_id, populate_existing=True)
            status = task.status if task is not None else None
        if status not in (protocol.CANCEL, protocol.FAILURE):
            return False
        agreed = self.client.cancel(endpoint, upstream_id)
        log.info("task %s is %s: upstream task %s on %s %s", job.task_id, status, upstream_id, endpoint.host,
                 "cancelled too" if agreed else "could not be cancelled")
        return True
