"""The simulator upstream: in-process, no network, real images.

A simulated job is a pure function of its nonce, its recorded submit time and the job
length, so a redelivered execution resumes following it (no second submission) exactly as
it would follow a real upstream job: steps already past are reported once, the rest on time.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Callable

from PIL import Image
from redis import Redis
from redis.exceptions import RedisError

from app.images import ImageStore
from app.models import now_ms
from workers.drivers import sim_images
from workers.drivers.base import Job, Reporter, UpstreamError
from workers.drivers.sim_jobs import Result, blend_prompt, produce

log = logging.getLogger(__name__)

#: Redis hash counting upstream submissions per nonce (fault tests assert ≤ 1 per job).
SUBMISSIONS_KEY = "mjq:sim:submissions"
#: Redis hash counting, per nonce, the executions a `[sim:crash]` job killed (the fault suite's own count).
CRASHES_KEY = "mjq:sim:crashes"
#: Newest fencing token the simulated upstream has seen, per account, pool and slot.
FENCE_KEY = "mjq:sim:fence"
#: Calls the simulated upstream refused because their fencing token was stale.
STALE_CALLS_KEY = "mjq:sim:stale-calls"
_FENCE_LUA = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < newest then redis.call('INCR', KEYS[2]) return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
#: Midjourney's progress steps and when each arrives, as fractions of the job length.
PROGRESS_STEPS = ((0.20, 15), (0.32, 31), (0.45, 46), (0.58, 62), (0.71, 78), (0.85, 93))
START_AT = 0.08
#: A job with no progress step draws its final picture this long before its end, seconds (drawing and
#: encoding it takes 0.15-0.75 s here, more on a busy machine).
FINAL_DRAW_LEAD_SECONDS = 2.0
# Scripted faults: a prompt carrying one of these markers fails the way Midjourney would.
FAULTS_AT_SUBMIT = {
    "[sim:banned]": "[Banned prompt detected] Sorry! Our AI moderator thinks this prompt is probably against our "
                    "community standards.",
    "[sim:queue-full]": "[Queue full] You have too many jobs queued at once.",
    "[sim:invalid]": "[Invalid parameter] Unrecognized parameter(s): `--sim`",
}
FAULT_MIDWAY = "[sim:moderated]"
_SECONDS_RE = re.compile(r"\[sim:seconds=(\d+(?:\.\d+)?)\]")
#: `[sim:submit-seconds=N]`: the upstream takes N seconds to answer the submit call, after it
#: has counted the submission (the window where a crash leaves mjq without the upstream id).
_SUBMIT_SECONDS_RE = re.compile(r"\[sim:submit-seconds=(\d+(?:\.\d+)?)\]")
#: Kills the worker process as soon as the job runs, every time (a poison job for the fault suite).
FAULT_CRASH = "[sim:crash]"


def job_seconds_of(prompt: str, default: float) -> float:
    """The simulated job's length: `[sim:seconds=N]` in the prompt overrides the configured one."""
    match = _SECONDS_RE.search(prompt)
    return float(match[1]) if match else default


def progress_steps_subset(count: int) -> tuple[tuple[float, int], ...]:
    """`count` of Midjourney's steps, evenly spread, ending at 93 % (0 = none)."""
    last = len(PROGRESS_STEPS) - 1
    if count <= 0:
        return ()
    if count == 1:
        return (PROGRESS_STEPS[last],)
    return tuple(PROGRESS_STEPS[round(i * last / (count - 1))] for i in range(count))


def job_hash(nonce: str) -> str:
    """The upstream job UUID (Midjourney's `messageHash`), stable per nonce."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mjq-sim:{nonce}"))


def message_id(nonce: str, salt: int) -> str:
    """A stable fake Discord message id (snowflake-sized digits)."""
    return str((int(nonce) + salt * 7919) % (1 << 63))


class SimulatorDriver:
    """Renders grids with Pillow and reports Midjourney's progress steps over `job_seconds`."""

    name = "simulator"

    def __init__(self, images: ImageStore, job_seconds: float, redis: Redis | None = None,
                 clock: Callable[[], int] = now_ms, sleep: Callable[[float], None] = time.sleep,
                 progress_steps: int = len(PROGRESS_STEPS)) -> None:
        self.images = images
        self.job_seconds = job_seconds
        self.steps = progress_steps_subset(progress_steps)
        self.redis = redis
        self.clock = clock
        self.sleep = sleep

    def submit(self, job: Job) -> str:
        for marker, reason in FAULTS_AT_SUBMIT.items():
            if marker in job.prompt:
                raise UpstreamError(reason)
        if self.redis is not None and job.slot_token is not None and not self._fence_accepts(job):
            raise UpstreamError(f"[Stale slot] fencing token {job.slot_token} is older than the account's newest")
        if self.redis is not None:
            try:
                self.redis.hincrby(SUBMISSIONS_KEY, job.nonce, 1)
            except RedisError as exc:
                log.warning("could not count simulator submission %s: %s", job.nonce, exc)
        slow = _SUBMIT_SECONDS_RE.search(job.prompt)
        if slow:
            self.sleep(float(slow[1]))
        return f"sim:{job.nonce}:{self.clock()}"

    def _fence_accepts(self, job: Job) -> bool:
        """The upstream's side of fencing: refuse a token lower than the newest it has seen."""
        assert self.redis is not None
        key = f"{FENCE_KEY}:{job.account_id}:{'relax' if job.mode == 'RELAX' else 'fast'}:{job.slot_index}"
        return bool(self.redis.eval(_FENCE_LUA, 2, key, STALE_CALLS_KEY, str(job.slot_token)))

    def follow(self, job: Job, upstream_ref: str, reporter: Reporter) -> None:
        submitted_ms = int(upstream_ref.rsplit(":", 1)[1])
        length_ms = job_seconds_of(job.prompt, self.job_seconds) * 1000.0
        hash_ = job_hash(job.nonce)
        seed = sim_images.seed_for(job.prompt, job.nonce)
        result: Result | None = None
        previews: Image.Image | None = None  # the picture the progress previews are made from

        def due(fraction: float) -> float:
            return submitted_ms + fraction * length_ms

        def wait_until(when_ms: float) -> None:
            delay = (when_ms - self.clock()) / 1000.0
            if delay > 0:
                self.sleep(delay)

        wait_until(due(START_AT))
        progress_id = message_id(job.nonce, 1)
        final_prompt = job.prompt or blend_prompt(job, self.images)
        reporter.started({"progressMessageId": progress_id, "finalPrompt": final_prompt})
        if FAULT_CRASH in job.prompt:
            if self.redis is not None:
                self.redis.hincrby(CRASHES_KEY, job.nonce, 1)
            os.kill(os.getpid(), signal.SIGKILL)
        for i, (fraction, percent) in enumerate(self.steps):
            next_due = due(self.steps[i + 1][0]) if i + 1 < len(self.steps) else due(1.0)
            if length_ms > 0 and next_due < self.clock():
                continue  # a resumed job: a later step is already due, report only the current one
            wait_until(due(fraction))
            if FAULT_MIDWAY in job.prompt and percent >= 46:
                raise UpstreamError("[Request cancelled due to output filters] simulated moderation")
            if result is None:
                result = produce(job, self.images, seed, hash_)
                previews = sim_images.preview_source(result.image) if result.image is not None else None
            url = None
            if previews is not None:
                url = self.images.put(f"{job.task_id}/progress-{percent}.webp",
                                      sim_images.to_webp(sim_images.preview(previews, percent)))
            reporter.progress(percent, url, {"messageHash": hash_})
        if result is None:
            # No progress step drew it: draw it shortly before the end, so a waiting job costs no CPU (drawing
            # it at the start put 500 pictures' Pillow work on the worker's GIL while its consumer took jobs).
            wait_until(due(1.0) - FINAL_DRAW_LEAD_SECONDS * 1000)
            result = produce(job, self.images, seed, hash_)
        # Like Midjourney, the upstream has its picture ready when the job's time is up: the PNG is
        # encoded inside the job's length, not after it (only storing it waits for the deadline).
        final_png = sim_images.to_png(result.image) if result.image is not None else None
        wait_until(due(1.0))
        url = result.image_url
        if final_png is not None:
            url = self.images.put(f"{job.task_id}/{hash_}.png", final_png)
        reporter.succeeded(url, result.buttons, {
            "messageId": message_id(job.nonce, 2), "messageHash": hash_, "flags": 0,
            "finalPrompt": final_prompt, "progressMessageId": progress_id, "seed": str(seed), **result.properties,
        }, prompt_en=result.prompt_en, image=result.image if final_png is not None else None)
