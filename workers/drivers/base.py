"""The upstream driver interface: one small contract, one module per upstream.

An execution calls `submit` once (its result is recorded on the row before anything else
happens) and then `follow`, which blocks until the upstream job ends and reports each
change through `Reporter`. A redelivered job whose submission was recorded skips `submit`
and calls `follow` with the recorded reference, so the upstream job is not submitted twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from config.errors import MjqError

if TYPE_CHECKING:
    from PIL import Image


class UpstreamError(MjqError):
    """Raised by a driver when the upstream refuses or fails the job; the message is the failReason."""


class UpstreamTimeout(UpstreamError):
    """Raised when the upstream job made no progress within the account's timeout."""


class UpstreamBusy(UpstreamError):
    """Raised by `submit` when the upstream has no room for the job now (an mjproxy upstream's code 23 or 3).

    Nothing was started upstream, so the executor may run the job on another account or try again later.
    """


@dataclass(frozen=True)
class Job:
    """What a driver needs to run one task (ids and values, never ORM objects)."""

    task_id: int
    action: str
    prompt: str
    mode: str
    bot_type: str
    nonce: str
    account_id: str
    account_settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None
    slot_token: int | None = None  # fencing token of the account slot this call runs under
    slot_index: int = 0            # which of the account's slots (tokens compare within one slot)


class Reporter(Protocol):
    def started(self, properties: dict[str, Any] | None = None) -> None:
        """The upstream began the job (IN_PROGRESS)."""

    def progress(self, percent: int, image_url: str | None, properties: dict[str, Any] | None = None) -> None:
        """A progress step with its preview image."""

    def succeeded(self, image_url: str | None, buttons: list[dict[str, Any]], properties: dict[str, Any],
                  prompt_en: str | None = None, image: Image.Image | None = None) -> None:
        """The final result. `image`: the picture at `image_url` when the driver holds it decoded already
        (the thumbnail and cells are then cut from it instead of reading the stored file back)."""


class Driver(Protocol):
    name: str

    def submit(self, job: Job) -> str:
        """Start `job` upstream; returns the upstream reference to record. Raises UpstreamError."""

    def follow(self, job: Job, upstream_ref: str, reporter: Reporter) -> None:
        """Block until the upstream job ends, reporting every change. Raises UpstreamError."""


def abandon(driver: Driver, job: Job, upstream_ref: str) -> None:
    """The job ended on mjq (a cancel, the sweeper) between its submit and the record of it: a driver that can
    stop an upstream job (an `abandon` method) does so, so nothing runs upstream for a job nobody follows."""
    stop = getattr(driver, "abandon", None)
    if stop is not None:
        stop(job, upstream_ref)
