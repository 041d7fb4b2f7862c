"""Follow-up actions: button clicks, the legacy change forms, modals, cancel and image seed.

A follow-up is a new task pinned to its parent's account and mode: the upstream state of
the parent lives on that account, and a mode prefix naming another mode is refused rather
than silently changing what the job costs or which slots it takes. Buttons that need more input
(Custom Zoom, Vary (Region), PicReader, PromptAnalyzer, and Reroll/Variation/Pan on a
Remix account) create a task in status MODAL that takes no queue slot until
`/submit/modal` completes it.
"""
from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from PIL import Image, UnidentifiedImageError
from sqlalchemy import update
from sqlalchemy.orm import Session

from app import protocol
from app.buttons import INPAINT, Click, label_of, legacy_custom_id, parse_custom_id
from app.errors import ApiError, NoAccount, NotFound, TaskNotFound, TaskStateConflict, ValidationFailed
from app.models import Account, Task, now_ms
from app.schemas import ActionRequest, Common, DecodedImage, ModalRequest
from app.services.submit import Spec, Submitter
from config.errors import MjqError
from workers.events import ClaimLost, TaskEvents

_ZOOM_RE = re.compile(r"(?:^|\s)--zoom\s+([0-9]*\.?[0-9]+)(?=\s|$)")
#: A Vary (Region) mask must be this close to pure black and white (share of pixels).
MASK_BW_SHARE = 0.98
_GRID_ACTIONS = (protocol.IMAGINE, protocol.VARIATION, protocol.REROLL, protocol.BLEND, protocol.ZOOM, protocol.PAN,
                 INPAINT)


def load_parent(sub: Submitter, task_id: int) -> Task:
    parent = sub.session.get(Task, task_id)
    if parent is None or (sub.viewer is not None and parent.owner != sub.viewer):
        raise NotFound(f"task {task_id} not found")
    if parent.status != protocol.SUCCESS:
        raise TaskStateConflict(f"task {task_id} is {parent.status}; actions need a SUCCESS task")
    return parent


def follow_up_mode(parent: Task, path_mode: str | None) -> str:
    """The parent's mode, which every follow-up keeps. Raises ValidationFailed when the mode prefix
    names another one (FAST vs TURBO too: they share the fast slots but not the price or speed)."""
    if path_mode is not None and path_mode != parent.mode:
        raise ValidationFailed(f"task {parent.id} ran in {parent.mode} mode; its follow-ups run in {parent.mode} "
                               f"mode too, not in {path_mode}: send it without a mode prefix or under "
                               f"/mj-{parent.mode.lower()}/mj")
    return parent.mode


def check_same_account(parent: Task, common: Common) -> None:
    """A follow-up runs where its parent ran. Raises ValidationFailed when accountFilter.instanceId names
    another account."""
    wanted = common.account_filter.instance_id
    if wanted is not None and wanted != parent.account_id:
        raise ValidationFailed(f"accountFilter.instanceId is {wanted}, but task {parent.id} ran on account "
                               f"{parent.account_id}; a follow-up always runs on its parent's account")


def parent_account(sub: Submitter, parent: Task) -> Account:
    account = sub.session.get(Account, parent.account_id) if parent.account_id else None
    if account is None or not account.enable:
        raise NoAccount(f"account {parent.account_id} of task {parent.id} is not available")
    return account


def image_key(task: Task) -> str | None:
    """The stored image of a task (its imageUrl points at /mj/image/<key>)."""
    if not task.image_url or "/mj/image/" not in task.image_url:
        return None
    return task.image_url.split("/mj/image/", 1)[1]


def _prefill(parent: Task, click: Click) -> str:
    prompts = (parent.properties or {}).get("prompts") or []
    base = (parent.properties or {}).get("finalPrompt") or parent.prompt_en or parent.prompt or ""
    if click.kind in ("picreader", "prompt_analyzer") and click.index and click.index <= len(prompts):
        return str(prompts[click.index - 1])
    if click.kind == "custom_zoom":
        return f"{_ZOOM_RE.sub('', base).strip()} --zoom 2"
    return str(base)


def submit_action(sub: Submitter, req: ActionRequest, path_mode: str | None) -> dict[str, Any]:
    """/submit/action: run the button `customId` of task `taskId`."""
    parent = load_parent(sub, req.task_id)
    if req.custom_id not in {b.get("customId") for b in parent.buttons or []}:
        raise ValidationFailed(f"customId {req.custom_id} is not a button of task {parent.id}")
    click = parse_custom_id(req.custom_id)
    if click is None:
        raise ValidationFailed(f"customId {req.custom_id} is not an action mjq can run")
    return _run_click(sub, parent, click, req.custom_id, req.common, path_mode)


def submit_change(sub: Submitter, task_id: int, action: str, index: int | None, common: Common,
                  path_mode: str | None) -> dict[str, Any]:
    """/submit/change and /submit/simple-change: U/V/R on a grid, as upstream's original API."""
    parent = load_parent(sub, task_id)
    if parent.action not in _GRID_ACTIONS:
        raise TaskStateConflict(f"task {task_id} is an {parent.action}; U/V/R apply to grids only")
    custom_id = legacy_custom_id(parent.buttons or [], action, index)
    click = parse_custom_id(custom_id) if custom_id else None
    if custom_id is None or click is None:
        raise TaskStateConflict(f"task {task_id} has no button for {action} {index or ''}".rstrip())
    return _run_click(sub, parent, click, custom_id, common, path_mode, legacy=True)


def _description(parent: Task, click: Click, custom_id: str, legacy: bool) -> str:
    if legacy or click.kind in ("upscale", "variation", "reroll"):
        short = {"upscale": f"U{click.index}", "variation": f"V{click.index}", "reroll": "R"}[click.kind]
        return f"/up {parent.id} {short}"
    return f"/up {parent.id} {label_of(parent.buttons or [], custom_id)}"


def _run_click(sub: Submitter, parent: Task, click: Click, custom_id: str, common: Common, path_mode: str | None,
               legacy: bool = False) -> dict[str, Any]:
    mode = follow_up_mode(parent, path_mode)
    check_same_account(parent, common)
    account = parent_account(sub, parent)
    if click.kind == "bookmark":
        # ❤️ only marks the parent upstream; Midjourney creates no job for it.
        parent.properties = {**(parent.properties or {}), "bookmarked": True}
        sub.session.commit()
        return protocol.envelope(protocol.CODE_SUCCESS, "Bookmarked", str(parent.id),
                                 {"discordInstanceId": account.id})
    if click.kind == "picreader_all":
        return _imagine_all(sub, parent, mode, account, common)
    inputs: dict[str, Any] = {"kind": click.kind, "customId": custom_id}
    if click.index is not None:
        inputs["index"] = click.index
    if click.zoom is not None:
        inputs["zoom"] = click.zoom
    if click.direction is not None:
        inputs["direction"] = click.direction
    key = image_key(parent)
    if key:
        inputs["parentImage"] = key
    # As midjourney-proxy: the new task copies the parent's prompt, promptEn and finalPrompt (the client's own
    # words stay in `prompt`; the bot's rendering of them is the finalPrompt).
    prompt, prompt_en = parent.prompt, parent.prompt_en
    final_prompt = (parent.properties or {}).get("finalPrompt")
    if click.kind == "reroll" and parent.action == protocol.BLEND:
        inputs.update(kind="blend", images=parent.inputs.get("images", []),
                      dimensions=parent.inputs.get("dimensions", "SQUARE"))
    elif click.kind == "reroll":
        inputs["kind"] = "imagine"
    properties: dict[str, Any] = {}
    if click.kind == "describe":  # 🔄 under a describe: describe the same image again
        inputs["images"] = parent.inputs.get("images", [])
        prompt = prompt_en = None
    else:
        if final_prompt:
            properties["finalPrompt"] = final_prompt
        # The prompt as the upstream showed it (not led by mjq's pad URLs); a describe's or a shorten's
        # finalPrompt is its result text, so theirs is the prompt they were given.
        shown = final_prompt if parent.action not in (protocol.DESCRIBE, protocol.SHORTEN) else None
        inputs["upstreamPrompt"] = shown or (parent.inputs or {}).get("upstreamPrompt") or prompt_en or ""
    # The legacy forms have no modal step (their clients never call /submit/modal): on a Remix account the
    # worker answers Midjourney's Remix modal itself, with the prompt Midjourney shows pre-filled.
    modal = not legacy and click.needs_modal(account.remix)
    if modal:
        properties = {"finalPrompt": _prefill(parent, click), "remix": account.remix, "customId": custom_id}
    task = sub.create(Spec(
        action=click.action, mode=mode, accounts=[account], common=common, prompt=prompt, prompt_en=prompt_en,
        description=lambda _id: _description(parent, click, custom_id, legacy), inputs=inputs,
        status=protocol.MODAL if modal else protocol.NOT_START, parent_id=parent.id, properties=properties,
        bot_type=parent.bot_type,
    ))
    return sub.accepted(task)


SUBMITTED_ALL = "Submit success (one task per prompt)"


def _imagine_all(sub: Submitter, parent: Task, mode: str, account: Account, common: Common) -> dict[str, Any]:
    """🎉 Imagine all: one IMAGINE per prompt of a describe. Every prompt is checked (translation, banned words)
    before any task is made; a refusal after the first task (a cap or a full queue reached on the way) answers
    with the tasks made, which run, and says which prompts were refused; a refusal of the first is the answer."""
    prompts = [str(p) for p in (parent.properties or {}).get("prompts") or []]
    if not prompts:
        raise TaskStateConflict(f"task {parent.id} has no prompts to imagine")
    prepared = [(p, sub.prompts.prepare(p)) for p in prompts]
    tasks: list[Task] = []
    for prompt, prompt_en in prepared:
        try:
            tasks.append(_imagine_from(sub, parent, prompt, prompt_en, mode, account, common))
        except ApiError as refused:
            if not tasks:
                raise
            rest = f"prompt {len(prompts)} was" if len(tasks) + 1 == len(prompts) else \
                f"prompts {len(tasks) + 1}–{len(prompts)} were"
            description = (f"Submit success for {len(tasks)} of {len(prompts)} prompts (one task each); {rest} "
                           f"refused: {refused.description}")
            break
    else:
        description = SUBMITTED_ALL
    return protocol.envelope(protocol.CODE_SUCCESS, description, str(tasks[0].id),
                             {"discordInstanceId": account.id, "taskIds": [str(t.id) for t in tasks]})


def _imagine_from(sub: Submitter, parent: Task, prompt: str, prompt_en: str, mode: str, account: Account,
                  common: Common) -> Task:
    return sub.create(Spec(
        action=protocol.IMAGINE, mode=mode, accounts=[account], common=common, prompt=prompt, prompt_en=prompt_en,
        description=lambda _id: f"/imagine {prompt}", inputs={"kind": "imagine"}, parent_id=parent.id,
        bot_type=parent.bot_type,
    ))


def check_mask(mask: DecodedImage | None) -> None:
    """A Vary (Region) mask: a PNG, black background, the area to change in white."""
    if mask is None:
        raise ValidationFailed("maskBase64 is required for Vary (Region): a PNG, black with the area to vary white")
    if mask.ext != "png":
        raise ValidationFailed("maskBase64 must be a PNG")
    try:
        image = Image.open(io.BytesIO(mask.data)).convert("L")
    except (UnidentifiedImageError, OSError):
        raise ValidationFailed("maskBase64 is not a readable PNG") from None
    histogram = image.histogram()
    total = sum(histogram)
    black, white = sum(histogram[:32]), sum(histogram[224:])
    if (black + white) / total < MASK_BW_SHARE or white == 0:
        raise ValidationFailed("maskBase64 must be black and white with some white (the area to vary)")


def submit_modal(sub: Submitter, req: ModalRequest, path_mode: str | None) -> dict[str, Any]:
    """/submit/modal: complete a MODAL task with its prompt (and mask) and enqueue it.

    MODAL → NOT_START is a compare-and-set on the status and `seq` read here, as every transition
    is (workers/events.py): a cancel that lands while the prompt is translated or the job admitted
    wins, and this request answers code 4 instead of reviving the cancelled task. Raises NotFound
    (3), ValidationFailed or TaskStateConflict (4), BannedPrompt (24).
    """
    task = sub.session.get(Task, req.task_id)
    if task is None or (sub.viewer is not None and task.owner != sub.viewer):
        raise NotFound(f"task {req.task_id} not found")
    if task.status != protocol.MODAL:
        raise TaskStateConflict(f"task {task.id} is {task.status}, not waiting in a modal")
    seen_seq = task.seq
    follow_up_mode(task, path_mode)
    prompt = req.prompt or (task.properties or {}).get("finalPrompt") or task.prompt or ""
    prompt_en = sub.prompts.prepare(prompt)
    inputs = {**(task.inputs or {}), "upstreamPrompt": prompt_en}
    description = task.description
    kind = inputs.get("kind")
    if kind == "custom_zoom":
        match = _ZOOM_RE.search(prompt_en)
        zoom = float(match[1]) if match else None
        if zoom is None or not 1.0 <= zoom <= 2.0:
            raise ValidationFailed("prompt must contain --zoom with a value from 1 to 2, e.g. 'a fox --zoom 1.5'")
        inputs["zoom"] = zoom
    if kind == "inpaint":
        check_mask(req.mask)
    if kind in ("picreader", "prompt_analyzer"):
        inputs["kind"] = "imagine"
        description = f"/imagine {prompt}"
    account = parent_account(sub, task)
    if kind == "inpaint":
        assert req.mask is not None
        inputs["mask"] = f"{task.id}/mask.png"
        sub.images.put(inputs["mask"], req.mask.data)
    _, code, ahead = sub.admit([account], task.mode, task.id, now_ms())
    try:
        moved = _leave_modal(sub.session, task.id, seen_seq, prompt=prompt, prompt_en=prompt_en, inputs=inputs,
                             description=description,
                             properties={**(task.properties or {}), "finalPrompt": prompt_en})
    except BaseException:
        sub.session.rollback()
        sub.forget(task)
        raise
    task = sub.session.get(Task, req.task_id, populate_existing=True)
    assert task is not None
    if not moved:
        sub.forget(task)
        raise TaskStateConflict(f"task {task.id} is no longer waiting for a modal: it became {task.status} "
                                "while this request was being handled")
    sub.admission[task.id] = (code, ahead)
    sub.enqueue(task)
    return sub.accepted(task)


def _leave_modal(session: Session, task_id: int, seen_seq: int, **values: Any) -> bool:
    """Move a MODAL task to NOT_START with `values` and commit, unless it was written since `seen_seq`
    was read (then roll back and return False). The row is recorded as sent, as a new submit's is
    (`Submitter.enqueue` clears that when the send fails)."""
    now = now_ms()
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == protocol.MODAL, Task.seq == seen_seq)
        .values(status=protocol.NOT_START, seq=seen_seq + 1, updated_at=now, enqueued_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    session.commit()
    return True


def cancel(sub: Submitter, task_id: int, events: Callable[[int], TaskEvents]) -> dict[str, Any]:
    """Cancel a waiting, running or MODAL task; returns its JSON. Raises TaskNotFound, or
    TaskStateConflict when it already finished.

    The change goes through the same guarded transition as a worker's (seq compare-and-set,
    event published, webhook written in the same transaction); the running execution, if
    any, loses its claim at its next write and frees its slot.
    """
    task = sub.session.get(Task, task_id)
    if task is None or (sub.viewer is not None and task.owner != sub.viewer):
        raise TaskNotFound(f"task {task_id} not found")
    if task.status in protocol.TERMINAL_STATUSES:
        raise TaskStateConflict(f"task {task_id} is already {task.status}")
    try:
        data = events(task_id).transition(status=protocol.CANCEL, failReason="cancelled by request",
                                          finishTime=now_ms())
    except ClaimLost:
        raise TaskStateConflict(f"task {task_id} finished while being cancelled") from None
    sub.forget(task)  # a waiting job leaves its account's queue at once
    return data


def image_seed(sub: Submitter, task_id: int,
               lookup: Callable[[Task, Account | None], str | None] | None = None) -> str:
    """The seed of a finished job. Raises TaskNotFound, or TaskStateConflict before it has one.

    `lookup` asks the upstream for a seed the job did not report (a Discord account's DM with the
    bot); the answer is kept on the task.
    """
    task = sub.session.get(Task, task_id)
    if task is None or (sub.viewer is not None and task.owner != sub.viewer):
        raise TaskNotFound(f"task {task_id} not found")
    seed = (task.properties or {}).get("seed")
    if seed is None and lookup is not None and task.status == protocol.SUCCESS:
        try:
            seed = lookup(task, sub.session.get(Account, task.account_id) if task.account_id else None)
        except MjqError as exc:
            raise TaskStateConflict(f"task {task_id}: the seed could not be read upstream: {exc}") from None
        if seed is not None:
            task.properties = {**(task.properties or {}), "seed": seed}
            sub.session.commit()
    if task.status != protocol.SUCCESS or not (task.properties or {}).get("messageHash") or seed is None:
        raise TaskStateConflict(f"task {task_id} has no image seed (status {task.status})")
    return str(seed)
