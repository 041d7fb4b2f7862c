"""Which Discord events belong to one job, and what they mean for it: a pure state machine.

The chain, strongest link first (the peers' most common failure is a job stuck because the
result was matched by prompt text; mjq's is not):

1. the interaction nonce: on INTERACTION_CREATE/SUCCESS (which give the interaction id) and
   on the first message the bot creates for it;
2. the interaction id on later messages (`interaction_metadata.id`), e.g. after `Job queued`;
3. the progress message id: its edits (MESSAGE_UPDATE) and errors replying to it;
4. the job hash from the preview's file name: the final image is a new message without the
   nonce, carrying the same hash;
5. for flows that carry no nonce at all (Vary (Region) through Midjourney's iframe): a new
   message replying to the parent's message with the expected kind (`Variations (Region)`);
6. last resort, only once the job started, its progress message was deleted (Midjourney deletes
   it right before posting the result) and no hash was ever seen: a final message whose prompt
   is the one our start message showed (links included: a blend's prompt is nothing but its
   images' links, a job with pad images leads with theirs), or whose primary prompt equals the
   job's. Before that deletion a twin job's result (same prompt, e.g. V1 and V2 of one grid)
   can arrive while ours still waits for its first progress edit.

A single nonce-bearing message that is already final (U1–U4's `Image #N`) is a success.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.drivers import discord_parse as dp
from workers.drivers.discord_events import ACCOUNT_DISABLED, Event

# What the tracker expects the result to look like.
EXPECT_IMAGE, EXPECT_DESCRIBE, EXPECT_SHORTEN, EXPECT_SWAP = "image", "describe", "shorten", "swap"


@dataclass
class Step:
    """One thing to report: started, progress, succeeded or failed."""

    kind: str  # started | progress | succeeded | failed
    message: dict[str, Any] = field(default_factory=dict)
    reading: dp.Reading | None = None
    percent: int | None = None
    reason: str = ""
    account_action: str | None = None


@dataclass
class Tracker:
    nonce: str
    expect: str = EXPECT_IMAGE
    prompt: str = ""
    parent_message_id: str | None = None
    #: (kind, detail) of the first message of a flow without nonce, replying to the parent (Vary (Region)).
    reply_kind: tuple[str, str | None] | None = None
    interaction_ids: set[str] = field(default_factory=set)
    message_ids: set[str] = field(default_factory=set)
    job_hash: str | None = None
    progress_message_id: str | None = None
    progress_deleted: bool = False
    #: The prompt as our start message showed it (Midjourney's own rendering, links as it wrote them).
    start_prompt: str | None = None
    percent: int = -1
    done: bool = False

    def feed(self, event: Event) -> list[Step]:
        """The steps `event` causes (usually none: most events belong to other jobs)."""
        if self.done:
            return []
        d = event.data
        if event.type == ACCOUNT_DISABLED:
            return self._end(Step("failed", reason=str(d.get("reason") or "the account was disabled")))
        if event.type.startswith("INTERACTION_"):
            return self._interaction(event.type, d)
        if event.type == "MESSAGE_DELETE" and str(d.get("id") or "") in self.message_ids:
            self.progress_deleted = True
            return []
        if event.type not in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            return []
        reading = dp.read_message(d)
        if not self._ours(event.type, d, reading):
            return []
        return self._advance(d, reading)

    def _interaction(self, kind: str, d: dict[str, Any]) -> list[Step]:
        if str(d.get("nonce") or "") != self.nonce:
            return []
        if d.get("id"):
            self.interaction_ids.add(str(d["id"]))
        if kind == "INTERACTION_FAILURE":
            return self._end(Step("failed", reason="[Interaction failed] Midjourney did not accept the interaction"))
        if kind in ("INTERACTION_MODAL_CREATE", "INTERACTION_IFRAME_MODAL_CREATE") and \
                str(d.get("title") or "").startswith("Action required to continue"):
            return self._end(Step("failed", reason="[Action required to continue] human verification required",
                                  account_action=dp.DISABLE_ACCOUNT))
        return []

    def _ours(self, kind: str, d: dict[str, Any], reading: dp.Reading) -> bool:
        message_id = str(d.get("id") or "")
        if str(d.get("nonce") or "") == self.nonce and self.nonce:
            return True
        interaction = d.get("interaction_metadata") or d.get("interaction") or {}
        if interaction.get("id") and str(interaction["id"]) in self.interaction_ids:
            return True
        if message_id in self.message_ids:
            return True
        replied_to = str((d.get("message_reference") or {}).get("message_id") or "")
        if replied_to and replied_to in self.message_ids:
            return True
        if kind != "MESSAGE_CREATE":
            return False
        if reading.job_hash and reading.job_hash == self.job_hash:
            return True
        if self.reply_kind and not self.message_ids and replied_to and replied_to == self.parent_message_id \
                and reading.content is not None and (reading.content.kind, reading.content.detail) == self.reply_kind:
            return True
        # Last resort (see the module docstring): progress message gone, never saw a hash, the same prompt.
        if not (self.progress_deleted and self.job_hash is None and reading.state == dp.FINAL
                and reading.content is not None):
            return False
        shown = reading.content.prompt
        if self.start_prompt and dp.same_rendering(shown, self.start_prompt):
            return True
        return bool(self.prompt) and dp.primary_prompt(shown) == dp.primary_prompt(self.prompt) \
            and not dp.links(self.start_prompt or "")

    def _advance(self, d: dict[str, Any], reading: dp.Reading) -> list[Step]:
        steps: list[Step] = []
        message_id = str(d.get("id") or "")
        if reading.job_hash and reading.state == dp.PROGRESS:
            self.job_hash = reading.job_hash
        if reading.state == dp.FAILED:
            return self._end(Step("failed", d, reading, reason=reading.fail_reason or "failed",
                                  account_action=reading.account_action))
        if reading.state in (dp.QUEUED, dp.NOTICE):
            return []
        final = (reading.state == dp.FINAL and self.expect == EXPECT_IMAGE) or \
            (reading.state == dp.DESCRIBED and self.expect == EXPECT_DESCRIBE) or \
            (reading.state == dp.SHORTENED and self.expect == EXPECT_SHORTEN) or \
            (self.expect == EXPECT_SWAP and reading.image_url is not None)
        if final:
            return self._end(Step("succeeded", d, reading))
        if reading.state not in (dp.START, dp.PROGRESS):
            return steps
        if self.progress_message_id is None:
            self.progress_message_id = message_id
            steps.append(Step("started", d, reading))
        if self.start_prompt is None and reading.content is not None and reading.content.prompt.strip():
            self.start_prompt = reading.content.prompt
        self.message_ids.add(message_id)
        if reading.state == dp.PROGRESS and reading.percent is not None and reading.percent > self.percent:
            self.percent = reading.percent
            steps.append(Step("progress", d, reading, percent=reading.percent))
        return steps

    def _end(self, step: Step) -> list[Step]:
        self.done = True
        return [step]
