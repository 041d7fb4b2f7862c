"""Admission of new jobs: validate → choose an account → insert the row → commit → enqueue.

The committed row is the promise to the client: when the broker is unreachable the answer
is still code 1 and the reconciler enqueues the row later. Follow-up actions build on the
same `Submitter` (app/services/actions.py).
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import insert, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app import protocol
from app.errors import NoAccount, QueueRejected, ValidationFailed
from app.images import UPLOADS, ImageStore, upload_day
from app.models import TASKS, Account, Task, new_task_id, now_ms
from app.schemas import Common, DecodedImage, ImagesRequest, ImagineRequest, prompt_mode
from app.services.accounts import (
    ACCOUNTS_VERSION,
    AccountDirectory,
    choose_account,
    concurrency_for,
    eligible_among,
    enabled_accounts,
)
from app.services.plans import DEFAULT_PLANS, DEFAULT_PRICES, Plan
from app.services.prompts import PromptChecker
from app.services.tenancy import check_plan
from config import Settings
from workers.dispatch import Dispatcher
from workers.queues import queue_for_mode
from workers.scheduler import Candidate, QueueFull, Scheduler, pool_of

log = logging.getLogger(__name__)

SUBMITTED_TEXT = "Submit success"
MODAL_TEXT = "Waiting for window confirm"
#: One statement for every new row (its compiled form is cached); the values come as parameters. It returns the
#: accounts' version (AccountDirectory): the list the task was placed with must not be older.
_INSERT_TASK = insert(TASKS).returning(ACCOUNTS_VERSION.scalar_subquery())
#: Placements of one submit when the accounts keep changing under it; the last one is not checked (it read the
#: accounts within the request, as every placement did before the cache).
PLACEMENTS = 3


class AccountsChanged(Exception):  # noqa: N818 - a signal between two methods, never raised to a caller
    """The accounts changed after the list a task was placed with was read: place it again."""


def candidate_modes(path_mode: str | None, prompt: str, modes_filter: tuple[str, ...], default: str
                    ) -> tuple[str, ...]:
    """The modes a new job may run in, in order of preference: the path prefix, else a --fast/--relax/--turbo
    flag, else accountFilter.modes (an ordered fallback list), else the default mode.

    Raises ValidationFailed (code 4) when the prefix or flag names a mode that accountFilter.modes leaves out.
    """
    named = path_mode or prompt_mode(prompt)
    if named is None:
        return modes_filter or (default,)
    if modes_filter and named not in modes_filter:
        source = "the path prefix" if path_mode else f"the prompt's --{named.lower()} flag"
        raise ValidationFailed(f"accountFilter.modes allows only {', '.join(modes_filter)}, but {source} "
                               f"asks for {named}")
    return (named,)


def new_nonce() -> str:
    """A Discord-style snowflake-sized numeric nonce for the upstream interaction."""
    return str(now_ms() - 1420070400000 << 22 | secrets.randbits(22))


@dataclass
class Spec:
    """A task about to be created. `images` maps an inputs slot to the images stored for it."""

    action: str
    mode: str
    accounts: list[Account]  # the eligible ones; admission picks one (follow-ups pass only the parent's)
    common: Common
    prompt: str | None = None
    prompt_en: str | None = None
    description: Callable[[int], str] = lambda task_id: ""
    images: dict[str, list[DecodedImage]] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    status: str = protocol.NOT_START
    parent_id: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    bot_type: str | None = None
    #: The accounts' version `accounts` were read at: the task's INSERT must see the same (None: not checked).
    accounts_version: int | None = None
    #: The `images` slot holding pad images (IMAGINE): their URLs lead `prompt`, `promptEn` and the description.
    pad_slot: str | None = None


class Submitter:
    """Creates tasks for one request: the session, clients and caller are passed in."""

    def __init__(self, session: Session, dispatcher: Dispatcher, images: ImageStore, settings: Settings,
                 prompts: PromptChecker, owner: str | None = None, scheduler: Scheduler | None = None,
                 viewer: str | None = None, plans: dict[str, Plan] | None = None,
                 prices: dict[str, tuple[int, int]] | None = None, image_mode: str | None = None,
                 accounts: AccountDirectory | None = None) -> None:
        """`owner`: the key the new tasks belong to; `viewer`: whose tasks may be read (None = all);
        `image_mode`: the URL form the submitter reads (app/image_modes.py), which its webhooks carry;
        `accounts`: the process's cache of enabled accounts (None: read them at every placement)."""
        self.accounts = accounts
        self.image_mode = image_mode
        self.scheduler = scheduler
        self.viewer = viewer
        self.plans = plans or DEFAULT_PLANS
        self.prices = prices or DEFAULT_PRICES
        self.session = session
        self.dispatcher = dispatcher
        self.images = images
        self.settings = settings
        self.prompts = prompts
        self.owner = owner
        self.admission: dict[int, tuple[int, int]] = {}

    # -- shared steps -------------------------------------------------------------------
    def placement(self, path_mode: str | None, prompt: str, common: Common, fresh: bool = False
                  ) -> tuple[str, list[Account], int | None]:
        """The new job's mode, the accounts that may run it (the first of `candidate_modes` that an enabled
        account passing accountFilter supports) and the accounts' version they were read at (None: unknown).
        `fresh` reads the accounts now instead of from the process's cache. Raises ValidationFailed (4),
        NoAccount (3)."""
        modes = candidate_modes(path_mode, prompt, common.account_filter.modes, self.settings.default_mode)
        version, enabled = (self.accounts.enabled(self.session, fresh) if self.accounts is not None
                            else (None, enabled_accounts(self.session)))
        for mode in modes:
            candidates = eligible_among(enabled, mode, common.bot_type, common.account_filter)
            if candidates:
                return mode, candidates, version
        raise NoAccount(f"no available account for mode {' or '.join(modes)} and bot {common.bot_type}")

    def admit(self, accounts: list[Account], mode: str, task_id: int, submit_ms: int) -> tuple[Account, int, int]:
        """Pick the account and queue the task on it: (account, code 1 or 22, tasks ahead).

        Raises QueueRejected (code 23) when every eligible queue is full. Without Redis the
        row is still the promise: the least busy account by the database, code 1.
        """
        if self.scheduler is not None:
            candidates = [Candidate(a.id, concurrency_for(a, mode), a.queue_size, a.weight) for a in accounts]
            try:
                admission = self.scheduler.admit(candidates, pool_of(mode), task_id, submit_ms)
            except QueueFull:
                raise QueueRejected(f"the queue is full: every eligible account ({len(accounts)}) has its "
                                    f"{mode} queue full; retry later") from None
            except RedisError as exc:
                log.warning("admission without Redis for task %s: %s", task_id, exc)
            else:
                return next(a for a in accounts if a.id == admission.account_id), admission.code, admission.ahead
        return choose_account(self.session, accounts, mode), protocol.CODE_SUCCESS, 0

    def create(self, spec: Spec) -> Task:
        """Admit the task, store its images, insert and commit the row, then enqueue it.

        A task that opens a modal is stored without admission and never enqueued here.
        """
        task_id = new_task_id()
        now = now_ms()
        if self.owner is not None:
            check_plan(self.session, self.owner, self.plans, self.prices, spec.action, spec.mode, now)
        account, code, ahead = spec.accounts[0], protocol.CODE_EXISTED, 0
        if spec.status == protocol.NOT_START:
            account, code, ahead = self.admit(spec.accounts, spec.mode, task_id, now)
        inputs = dict(spec.inputs)
        to_store: list[tuple[str, DecodedImage]] = []
        for slot, imgs in spec.images.items():
            keys = [f"{task_id}/{slot}-{i}.{img.ext}" for i, img in enumerate(imgs)]
            to_store += zip(keys, imgs, strict=True)
            inputs[slot] = keys
        prompt, prompt_en, description = spec.prompt, spec.prompt_en, spec.description(task_id)
        pads = [self.images.url(key) for key in inputs.get(spec.pad_slot) or []] if spec.pad_slot else []
        if pads:
            # As midjourney-proxy shows a job with pad images: their URLs lead the prompts and follow the
            # command in the description. The upstream is sent the prompt without them (its driver passes
            # the images its own way).
            lead = " ".join(pads)
            inputs["upstreamPrompt"] = prompt_en
            command, _, rest = description.partition(" ")
            prompt, prompt_en, description = f"{lead} {prompt}", f"{lead} {prompt_en}", f"{command} {lead} {rest}"
        hook = spec.common.notify_hook or self.settings.notify_hook or None
        properties: dict[str, Any] = {
            "discordInstanceId": account.id, "botType": spec.bot_type or spec.common.bot_type,
            "nonce": new_nonce(), "mode": spec.mode, **spec.properties,
        }
        if hook:
            properties["notifyHook"] = hook
        row: dict[str, Any] = dict(
            id=task_id, action=spec.action, status=spec.status, prompt=prompt, prompt_en=prompt_en,
            description=description, state=spec.common.state, submit_time=now, progress=None,
            properties=properties, buttons=[], mode=spec.mode, queue=queue_for_mode(spec.mode),
            bot_type=spec.common.bot_type, account_id=account.id, owner=self.owner, parent_id=spec.parent_id,
            notify_hook=hook, inputs=inputs, attempt=0, seq=0, updated_at=now, image_mode=self.image_mode,
            enqueued_at=now if spec.status == protocol.NOT_START else None,
        )
        # The row is written by one INSERT statement, not through the session's unit of work: the flush's
        # bookkeeping cost more CPU than the statement (bench P1). The Task returned is outside the session.
        task = Task(**row)
        try:
            for key, img in to_store:
                self.images.put(key, img.data)
            version = self.session.connection().execute(_INSERT_TASK, row).scalar()
            placed = spec.accounts_version
            if placed is not None and version != placed:
                if self.accounts is not None:
                    self.accounts.forget(placed)
                if to_store:  # placed again under a new id: these files would belong to no task
                    self.images.delete_task(task_id)
                raise AccountsChanged(f"accounts version {placed} -> {version}")
            self.session.commit()
        except BaseException:  # a full disk as much as a lost database: the admission must not linger
            self.session.rollback()
            self.forget(task)
            raise
        self.admission[task.id] = (code, ahead)
        if task.status == protocol.NOT_START:
            self.enqueue(task)
        return task

    def forget(self, task: Task) -> None:
        """Undo an admission whose row was not written (or will not run)."""
        if self.scheduler is None or task.account_id is None:
            return
        try:
            self.scheduler.forget(task.account_id, pool_of(task.mode), task.id, 1)
        except RedisError:
            pass

    def enqueue(self, task: Task) -> bool:
        """Send the job's message after its row is committed.

        The row was committed as sent (`enqueued_at` set with it), so a submit writes PostgreSQL once: a
        second UPDATE and commit per submit cost as much as the INSERT (bench P1). A failed send clears
        `enqueued_at`, which the reconciler's "unsent" rule looks for (5 s). A process that dies between the
        commit and the send leaves it set and no message: the reconciler's "dropped" rule sends it once
        MJQ_REQUEUE_AFTER_SECONDS have passed.
        """
        if self.dispatcher.execute(task.id, task.action, task.queue):
            return True
        try:
            self.session.execute(update(Task).where(Task.id == task.id).values(enqueued_at=None)
                                 .execution_options(synchronize_session=False))
            self.session.commit()
            set_committed_value(task, "enqueued_at", None)
        except DBAPIError as exc:  # the "dropped" rule still finds it, later
            self.session.rollback()
            log.warning("task %s: its failed send could not be recorded: %s", task.id, exc)
        return False

    def accepted(self, task: Task) -> dict[str, Any]:
        """The answer: code 1 (a slot is free now), 22 (queued, with the tasks ahead) or 21 (a modal waits)."""
        props: dict[str, Any] = {"discordInstanceId": task.account_id}
        if task.status == protocol.MODAL:
            props.update(finalPrompt=task.properties.get("finalPrompt"), remix=task.properties.get("remix", False))
            return protocol.envelope(protocol.CODE_EXISTED, MODAL_TEXT, str(task.id), props)
        code, ahead = self.admission.get(task.id, (protocol.CODE_SUCCESS, 0))
        if code == protocol.CODE_IN_QUEUE:
            props["numberOfQueues"] = ahead
            return protocol.envelope(code, f"In queue, there are {ahead} tasks ahead", str(task.id), props)
        return protocol.envelope(protocol.CODE_SUCCESS, SUBMITTED_TEXT, str(task.id), props)

    # -- new jobs -------------------------------------------------------------------------
    def new_job(self, path_mode: str | None, prompt: str, common: Common,
                spec: Callable[[str, list[Account]], Spec]) -> dict[str, Any]:
        """Place a new job, create it and answer; placed again when the accounts changed after the list it was
        placed with was read (see AccountDirectory). Raises what `placement` and `create` raise."""
        fresh = False
        for placement in range(1, PLACEMENTS + 1):
            try:
                mode, accounts, version = self.placement(path_mode, prompt, common, fresh)
                checked = version if placement < PLACEMENTS else None
                return self.accepted(self.create(replace(spec(mode, accounts), accounts_version=checked)))
            except AccountsChanged as changed:
                log.info("new job placed again: %s", changed)
                fresh = True
            except (NoAccount, QueueRejected):
                # A refusal must hold against the accounts as they are now, not as the cache last saw them.
                if fresh or self.accounts is None:
                    raise
                fresh = True
        raise AssertionError("the last placement is not checked")

    def imagine(self, req: ImagineRequest, path_mode: str | None) -> dict[str, Any]:
        """IMAGINE. Raises BannedPrompt (24), NoAccount (3)."""
        prompt_en = self.prompts.prepare(req.prompt)
        return self.new_job(path_mode, req.prompt, req.common, lambda mode, accounts: Spec(
            action=protocol.IMAGINE, mode=mode, accounts=accounts, common=req.common,
            prompt=req.prompt, prompt_en=prompt_en, description=lambda _id: f"/imagine {req.prompt}",
            images={"images": list(req.images)}, inputs={"kind": "imagine"}, pad_slot="images",
        ))

    def describe(self, req: ImagesRequest, path_mode: str | None) -> dict[str, Any]:
        ext = req.images[0].ext.replace("jpeg", "jpg")
        return self.new_job(path_mode, "", req.common, lambda mode, accounts: Spec(
            action=protocol.DESCRIBE, mode=mode, accounts=accounts, common=req.common,
            description=lambda task_id: f"/describe {task_id}.{ext}", images={"images": list(req.images)},
            inputs={"kind": "describe"},
        ))

    def blend(self, req: ImagesRequest, path_mode: str | None) -> dict[str, Any]:
        count = len(req.images)
        return self.new_job(path_mode, "", req.common, lambda mode, accounts: Spec(
            action=protocol.BLEND, mode=mode, accounts=accounts, common=req.common,
            description=lambda task_id: f"/blend {task_id} {count}", images={"images": list(req.images)},
            inputs={"kind": "blend", "dimensions": req.dimensions},
        ))

    def shorten(self, prompt: str, common: Common, path_mode: str | None) -> dict[str, Any]:
        prompt_en = self.prompts.prepare(prompt)
        return self.new_job(path_mode, prompt, common, lambda mode, accounts: Spec(
            action=protocol.SHORTEN, mode=mode, accounts=accounts, common=common,
            prompt=prompt, prompt_en=prompt_en, description=lambda _id: f"/shorten {prompt}",
            inputs={"kind": "shorten"},
        ))

    def swap_face(self, req: ImagesRequest, path_mode: str | None) -> dict[str, Any]:
        source, target = req.images
        return self.new_job(path_mode, "", req.common, lambda mode, accounts: Spec(
            action=protocol.SWAP_FACE, mode=mode, accounts=accounts, common=req.common,
            description=lambda task_id: f"/swap_face {task_id}", images={"source": [source], "target": [target]},
            inputs={"kind": "swap_face"}, bot_type="INSIGHT_FACE",
        ))

    def upload(self, req: ImagesRequest) -> dict[str, Any]:
        """Store images and answer their URLs (`result` is an array); no job is created."""
        batch = secrets.token_hex(8)
        folder = f"{UPLOADS}/{upload_day(now_ms())}"
        urls = [self.images.put(f"{folder}/{batch}-{i}.{img.ext}", img.data) for i, img in enumerate(req.images)]
        return protocol.envelope(protocol.CODE_SUCCESS, SUBMITTED_TEXT, urls)
