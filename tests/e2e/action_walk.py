"""The scripted walk through every Midjourney action, against a running mjq (e.g. `make run`).

    .venv/bin/python -m tests.e2e.action_walk --base http://127.0.0.1:8080 --secret S [--prefix /mj-relax/mj]

Each step submits over HTTP as a client would, waits for the expected status, and checks
the geometry its action implies on the downloaded image. Steps that do not depend on each
other run at once (a thread per branch: the grid's follow-ups, the upscale's, describe's,
shorten's, the Remix flows...). It prints one line per step as it passes, then the wall
time, and exits non-zero on the first failed check.

Remix: Reroll, Variation and Pan open a modal only on an account in Remix mode. The walk runs
them on the first enabled Remix account the admin API lists (by `accountFilter.instanceId`);
when there is none and the caller is an admin, it creates (or re-enables) a simulator account
`walk-remix-<prefix>` for itself and disables it at the end; a caller that is not an admin
asks for `accountFilter.remix = true`. Every other new job asks for `accountFilter.remix =
false`, so its follow-ups never open a Remix modal. The walk's output says which it did.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from PIL import Image, ImageDraw

from tests.imaging import cell, centre_box, data_url, diff

#: How long one job may take to reach its status, in seconds (queued behind the walk's other jobs included).
STEP_TIMEOUT_SECONDS = 180
#: Seconds between two fetches of a job the walk waits for.
POLL_SECONDS = 0.5
#: Largest mean pixel difference still counted as "the same picture" after resampling.
SAME = 8.0
#: A pan extends the canvas by half: the new side is 1.5 times the old one.
PAN_GROWTH = 1.5
#: The walk's own Remix account (when the stack has none) is this prefix + the walk's prefix.
OWN_REMIX_ACCOUNT = "walk-remix"
#: Every step, in the order of the issue's list; each passes exactly once per walk.
STEPS = (
    "imagine", "U2", "V1", "🔄 Reroll", "/submit/change UPSCALE 3", "/submit/change VARIATION 2",
    "/submit/change REROLL", "/submit/simple-change U4", "image-seed",
    "Vary (Strong)", "Vary (Subtle)", "Upscale (Subtle)", "Upscale (Creative)", "Zoom Out 2x", "Zoom Out 1.5x",
    "Pan Left", "Pan Right", "Pan Up", "Pan Down", "Custom Zoom (21 → 1.5)", "Vary (Region) (21 → mask)", "❤️",
    "describe uploaded image", "PicReader 2 (21 → modal)", "describe 🔄 retry", "🎉 Imagine all",
    "blend 3 LANDSCAPE", "shorten", "PromptAnalyzer 3 (21 → modal)", "Show Details", "swap face",
    "imagine (Remix account)", "Remix 🔄 (21 → modal)", "Remix V1 (21 → modal)", "U1 (Remix account)",
    "Remix Pan Right (21 → modal)", "cancel a waiting job",
)
_MODES = {"/mj-fast": "FAST", "/mj-relax": "RELAX", "/mj-turbo": "TURBO"}


class WalkFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise WalkFailed(message)


def parallel(*branches: Callable[[], object]) -> None:
    """Run `branches` at once, each on its own thread; raises the first failure once all have ended."""
    with ThreadPoolExecutor(max_workers=len(branches)) as pool:
        futures = [pool.submit(branch) for branch in branches]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


@dataclass
class Walker:
    base: str
    secret: str = ""
    prefix: str = "/mj"
    log: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    #: accountFilter of the Remix steps' new jobs, and how the walk got it (for its output).
    remix_filter: dict[str, Any] = field(default_factory=dict)
    remix_note: str = ""
    cleanup: list[Callable[[], object]] = field(default_factory=list)
    seconds: float = 0.0  # the walk's wall time, once it passed

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()

    @property
    def http(self) -> requests.Session:
        """A session per thread: the branches run at once."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            if self.secret:
                session.headers["mj-api-secret"] = self.secret
        return session

    @property
    def mode(self) -> str | None:
        """The mode the prefix names (None under /mj: the server's default)."""
        return next((mode for p, mode in _MODES.items() if self.prefix.startswith(f"{p}/")), None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post(f"{self.base}{self.prefix}{path}", json=body, timeout=30)
        check(resp.status_code == 200, f"POST {path} answered HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()  # type: ignore[no-any-return]

    def get(self, path: str) -> Any:
        return self.http.get(f"{self.base}{self.prefix}{path}", timeout=30).json()

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """An answer of the accounts admin API under /mj; None when the caller is not an admin (401/403)."""
        resp = self.http.request(method, f"{self.base}/mj{path}", json=body, timeout=30)
        return None if resp.status_code in (401, 403) else resp.json()  # type: ignore[no-any-return]

    def wait(self, task_id: str, status: str = "SUCCESS") -> dict[str, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            task = self.get(f"/task/{task_id}/fetch")
            if task["status"] == status:
                return task  # type: ignore[no-any-return]
            check(task["status"] not in ("FAILURE", "CANCEL", "SUCCESS"),
                  f"task {task_id} ({task['action']}) ended {task['status']} ({task['failReason']}), expected {status}")
            time.sleep(POLL_SECONDS)
        raise WalkFailed(f"task {task_id} did not reach {status} in {STEP_TIMEOUT_SECONDS}s")

    def submit(self, path: str, body: dict[str, Any], codes: tuple[int, ...] = (1, 22)) -> dict[str, Any]:
        """POST a submit as a client does: a full queue (23) is tried again a second later, until the step
        timeout. `codes`: the answers expected, 1 (a slot is free), 22 (queued behind the walk's other jobs) or
        21 (a modal)."""
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        answer = self.post(path, body)
        while answer.get("code") == 23 and 23 not in codes and time.monotonic() < deadline:
            time.sleep(1.0)
            answer = self.post(path, body)
        check(answer.get("code") in codes, f"{path}: expected code {' or '.join(map(str, codes))}, got {answer}")
        return answer

    def submitted(self, path: str, body: dict[str, Any], codes: tuple[int, ...] = (1, 22)) -> str:
        """The id of the task a submit created (recorded for the caller)."""
        answer = self.submit(path, body, codes)
        with self._lock:
            self.task_ids.append(str(answer["result"]))
        return str(answer["result"])

    def new_job(self, path: str, body: dict[str, Any], remix: bool = False) -> dict[str, Any]:
        """Submit a new job (on a Remix account when `remix`, else on one without) and wait for its SUCCESS."""
        account_filter = self.remix_filter if remix else {"remix": False}
        return self.wait(self.submitted(path, {**body, "accountFilter": account_filter}))

    def custom_id(self, parent: dict[str, Any], label: str) -> str:
        custom_id = next((b["customId"] for b in parent["buttons"] if label in (b["label"], b["emoji"])), None)
        check(custom_id is not None, f"task {parent['id']} has no button {label!r}")
        return str(custom_id)

    def click(self, parent: dict[str, Any], label: str, codes: tuple[int, ...] = (1, 22)) -> str:
        return self.submitted("/submit/action", {"taskId": parent["id"], "customId": self.custom_id(parent, label)},
                              codes)

    def done(self, parent: dict[str, Any], label: str) -> dict[str, Any]:
        """Click `label` on `parent` and wait for the new job's SUCCESS."""
        return self.wait(self.click(parent, label))

    def modal(self, parent: dict[str, Any], label: str, body: dict[str, Any], remix: bool = False
              ) -> dict[str, Any]:
        """Click `label` (answered 21: a MODAL task), complete it with `body`, wait for its SUCCESS."""
        modal_id = self.click(parent, label, codes=(21,))
        waiting = self.get(f"/task/{modal_id}/fetch")
        check(waiting["status"] == "MODAL", f"{label} did not wait in MODAL: {waiting['status']}")
        if remix:
            props = waiting["properties"]
            check(props.get("remix") is True and props.get("finalPrompt") == parent["properties"]["finalPrompt"],
                  f"the Remix modal of {label} is not pre-filled with the parent's prompt: {props}")
        return self.wait(self.submitted("/submit/modal", {"taskId": modal_id, **body}))

    def image(self, task: dict[str, Any]) -> Image.Image:
        resp = self.http.get(task["imageUrl"], timeout=60)
        check(resp.status_code == 200, f"image of {task['id']} answered {resp.status_code}")
        return Image.open(io.BytesIO(resp.content)).convert("RGB")

    def step(self, name: str, detail: str) -> None:
        line = f"ok  {name:<30} {detail}"
        with self._lock:
            self.log.append(line)
            self.names.append(name)
        print(line, flush=True)

    def prepare_remix(self) -> None:
        """Find (or make) an account in Remix mode for the Remix steps; see the module docstring."""
        listed = self.admin("GET", "/account/list")
        if listed is None:
            self.remix_filter = {"remix": True}
            self.remix_note = "asked by accountFilter.remix=true (the caller is not an admin)"
            return
        own = f"{OWN_REMIX_ACCOUNT}{re.sub(r'[^a-z0-9]+', '-', self.prefix.lower()).rstrip('-')}"
        found = next((a for a in listed["result"] if a["remix"] and a["enable"] and not
                      a["id"].startswith(OWN_REMIX_ACCOUNT) and (self.mode is None or self.mode in a["modes"])), None)
        if found is not None:
            self.remix_filter = {"instanceId": found["id"]}
            self.remix_note = f"account {found['id']} ({found['driver']}, Remix on), by accountFilter.instanceId"
            return
        fields = {"remix": True, "enable": True, "modes": ["FAST", "TURBO", "RELAX"], "fastConcurrency": 12,
                  "relaxConcurrency": 6, "queueSize": 50}
        if (self.admin("GET", f"/account/{own}/fetch") or {}).get("code") == 1:  # left by an earlier walk
            answer, how = self.admin("PUT", f"/account/{own}/update", fields), "re-enabled"
        else:
            answer, how = self.admin("POST", "/account/create", {"id": own, "name": "Action walk (Remix)",
                                                                 "driver": "simulator", **fields}), "created"
        check(answer is not None and answer["code"] == 1, f"the walk's Remix account was refused: {answer}")
        self.cleanup.append(lambda: self.admin("POST", f"/account/{own}/disable", {"reason": "the action walk ended"}))
        self.remix_filter = {"instanceId": own}
        self.remix_note = (f"{how} simulator account {own} (Remix on) through the admin API, by "
                           "accountFilter.instanceId; disabled again when the walk ends")


def same_aspect(a: Image.Image, b: Image.Image) -> bool:
    return abs(a.width / a.height - b.width / b.height) < 0.01


def check_upscale(w: Walker, task: dict[str, Any], grid: Image.Image, index: int, name: str) -> Image.Image:
    """An upscale of cell `index`: twice the cell, showing it."""
    u, c = w.image(task), cell(grid, index)
    check(task["action"] == "UPSCALE" and u.size == (c.width * 2, c.height * 2),
          f"{name} is {task['action']} {u.size}, cell {index} is {c.size}")
    check(diff(u.resize(c.size), c) < SAME, f"{name} does not show cell {index}")
    w.step(name, f"{u.width}x{u.height} = 2x cell {index} ({c.width}x{c.height})")
    return u


def check_grid(w: Walker, task: dict[str, Any], action: str, like: Image.Image, name: str,
               unlike: Image.Image | None = None) -> Image.Image:
    """A new grid of `action` with the aspect of `like` (and, given `unlike`, another picture than it)."""
    g = w.image(task)
    check(task["action"] == action and same_aspect(g, like),
          f"{name} is {task['action']} {g.size}, not like {like.size}")
    if unlike is not None:
        check(g.size != unlike.size or diff(g, unlike) > SAME, f"{name} gave the same picture again")
    w.step(name, f"{action} grid {g.width}x{g.height}, same aspect")
    return g


def check_zoom(w: Walker, task: dict[str, Any], u: Image.Image, factor: float, name: str) -> None:
    z1 = cell(w.image(task), 1)
    centre = z1.crop(centre_box(z1.size, factor))
    check(diff(centre, u.resize(centre.size)) < SAME, f"{name} does not show the image at 1/{factor:g} size in the "
                                                      "centre")
    w.step(name, f"cell {z1.width}x{z1.height}, old image at 1/{factor:g} size in the centre")


def check_pan(w: Walker, task: dict[str, Any], u: Image.Image, direction: str, name: str) -> None:
    """A pan: the canvas grows by half towards `direction`; the old image stays on the far side."""
    p1 = cell(w.image(task), 1)
    check(task["action"] == "PAN", f"{name} is {task['action']}")
    if direction in ("left", "right"):
        old = round(p1.height * u.width / u.height)
        check(abs(p1.width - PAN_GROWTH * old) <= 2, f"{name} cell is {p1.size}, expected width {PAN_GROWTH * old}")
        box, where, grew = ((p1.width - old, 0, p1.width, p1.height), "right", "widened") if direction == "left" \
            else ((0, 0, old, p1.height), "left", "widened")
    else:
        old = round(p1.width * u.height / u.width)
        check(abs(p1.height - PAN_GROWTH * old) <= 2, f"{name} cell is {p1.size}, expected height {PAN_GROWTH * old}")
        box, where, grew = ((0, p1.height - old, p1.width, p1.height), "bottom", "heightened") if direction == "up" \
            else ((0, 0, p1.width, old), "top", "heightened")
    kept = p1.crop(box)
    check(diff(kept, u.resize(kept.size)) < SAME, f"{name} does not keep the old image on the {where}")
    w.step(name, f"cell {p1.width}x{p1.height}: {grew} {PAN_GROWTH:g}x, old image on the {where}")


def walk(w: Walker) -> None:
    """Every action of the actions issue, independent branches at once (see STEPS for the list)."""
    started = time.monotonic()
    try:
        parallel(lambda: grid_branch(w), lambda: describe_branch(w), lambda: blend_step(w),
                 lambda: shorten_branch(w), lambda: swap_face_step(w), lambda: remix_branch(w),
                 lambda: cancel_step(w))
    finally:
        for undo in w.cleanup:
            undo()
    w.seconds = time.monotonic() - started


def grid_branch(w: Walker) -> None:
    grid = w.new_job("/submit/imagine", {"prompt": "a red fox in snow --ar 16:9"})
    g = w.image(grid)
    check(abs(g.width / g.height - 16 / 9) < 0.01 and g.height >= 1024, f"imagine grid is {g.size}")
    w.step("imagine", f"grid {g.width}x{g.height}, {len(grid['buttons'])} buttons")

    def legacy(path: str, body: dict[str, Any], short: str) -> dict[str, Any]:
        """The legacy forms: the job a U/V/R change made, described as `/up <id> <short>`."""
        task = w.wait(w.submitted(path, body))
        check(task["description"] == f"/up {grid['id']} {short}", f"{path} described as {task['description']!r}")
        return task

    def upscale() -> None:
        up = w.done(grid, "U2")
        upscale_branch(w, up, check_upscale(w, up, g, 2, "U2"))

    def change_upscale() -> None:
        task = legacy("/submit/change", {"taskId": grid["id"], "action": "UPSCALE", "index": 3}, "U3")
        check_upscale(w, task, g, 3, "/submit/change UPSCALE 3")

    def change_variation() -> None:
        task = legacy("/submit/change", {"taskId": grid["id"], "action": "VARIATION", "index": 2}, "V2")
        check_grid(w, task, "VARIATION", g, "/submit/change VARIATION 2")

    def change_reroll() -> None:
        task = legacy("/submit/change", {"taskId": grid["id"], "action": "REROLL"}, "R")
        check_grid(w, task, "REROLL", g, "/submit/change REROLL", unlike=g)

    def simple_change() -> None:
        task = legacy("/submit/simple-change", {"content": f"{grid['id']} U4"}, "U4")
        check_upscale(w, task, g, 4, "/submit/simple-change U4")

    def seed() -> None:
        answer = w.get(f"/task/{grid['id']}/image-seed")
        check(answer["code"] == 1 and str(answer["result"]).isdigit(), f"image-seed answered {answer}")
        check(w.get(f"/task/{grid['id']}/image-seed") == answer, "image-seed is not stable")
        w.step("image-seed", str(answer["result"]))

    parallel(upscale, lambda: check_grid(w, w.done(grid, "V1"), "VARIATION", g, "V1"),
             lambda: check_grid(w, w.done(grid, "🔄"), "REROLL", g, "🔄 Reroll", unlike=g),
             change_upscale, change_variation, change_reroll, simple_change, seed)


def upscale_branch(w: Walker, up: dict[str, Any], u: Image.Image) -> None:
    """Everything under an upscaled image."""

    def bigger(label: str) -> None:
        task = w.done(up, label)
        b = w.image(task)
        check(task["action"] == "UPSCALE" and b.size == (u.width * 2, u.height * 2),
              f"{label} is {task['action']} {b.size}, the upscale is {u.size}")
        check(diff(b.resize(u.size), u) < SAME, f"{label} does not show the upscaled image")
        w.step(label, f"{b.width}x{b.height} = 2x the upscale")

    def custom_zoom() -> None:
        task = w.modal(up, "Custom Zoom", {"prompt": "a red fox in snow --zoom 1.5"})
        check_zoom(w, task, u, 1.5, "Custom Zoom (21 → 1.5)")

    def vary_region() -> None:
        mask = Image.new("L", (200, 100), 0)
        mask.paste(255, (100, 0, 200, 100))
        task = w.modal(up, "Vary (Region)", {"maskBase64": data_url(mask)})
        r1 = cell(w.image(task), 1)
        small = u.resize(r1.size)
        keep, change = (0, 0, r1.width // 2 - 4, r1.height), (r1.width // 2 + 4, 0, r1.width, r1.height)
        check(diff(r1.crop(keep), small.crop(keep)) < 1.5, "Vary (Region) changed the black (kept) area")
        check(diff(r1.crop(change), small.crop(change)) > 10, "Vary (Region) did not change the white area")
        w.step("Vary (Region) (21 → mask)", "left half unchanged, right half new")

    def bookmark() -> None:
        answer = w.submit("/submit/action", {"taskId": up["id"], "customId": w.custom_id(up, "❤️")}, codes=(1,))
        check(answer["result"] == up["id"], f"❤️ answered {answer}")
        marked = w.get(f"/task/{up['id']}/fetch")["properties"]
        check(marked.get("bookmarked") is True, f"❤️ did not mark the upscale: {marked}")
        w.step("❤️", "no new job; the upscale is marked bookmarked")

    pans = {"⬅️": "left", "➡️": "right", "⬆️": "up", "⬇️": "down"}
    parallel(lambda: check_grid(w, w.done(up, "Vary (Strong)"), "VARIATION", u, "Vary (Strong)"),
             lambda: check_grid(w, w.done(up, "Vary (Subtle)"), "VARIATION", u, "Vary (Subtle)"),
             lambda: bigger("Upscale (Subtle)"), lambda: bigger("Upscale (Creative)"),
             lambda: check_zoom(w, w.done(up, "Zoom Out 2x"), u, 2.0, "Zoom Out 2x"),
             lambda: check_zoom(w, w.done(up, "Zoom Out 1.5x"), u, 1.5, "Zoom Out 1.5x"),
             *(lambda e=e, d=d: check_pan(w, w.done(up, e), u, d, f"Pan {d.title()}") for e, d in pans.items()),
             custom_zoom, vary_region, bookmark)


def describe_branch(w: Walker) -> None:
    photo = Image.new("RGB", (1200, 800), (30, 90, 200))
    urls = w.post("/submit/upload-discord-images", {"base64Array": [data_url(photo)]})
    check(urls["code"] == 1 and isinstance(urls["result"], list), f"upload answered {urls}")
    uploaded = Image.open(io.BytesIO(w.http.get(urls["result"][0], timeout=30).content)).convert("RGB")
    described = w.new_job("/submit/describe", {"base64": data_url(uploaded)})
    final = described["properties"]["finalPrompt"]
    check(all(k in final for k in ("1️⃣", "2️⃣", "3️⃣", "4️⃣")) and "--ar 3:2" in final, f"describe gave {final!r}")
    w.step("describe uploaded image", "four prompts, --ar 3:2")
    prompts = described["properties"]["prompts"]

    def picreader() -> None:
        task = w.modal(described, "2️⃣", {})
        check(task["action"] == "IMAGINE" and task["prompt"] == prompts[1], "PicReader 2 did not imagine prompt 2")
        w.step("PicReader 2 (21 → modal)", "imagined prompt 2")

    def retry() -> None:
        task = w.done(described, "🔄")
        again = task["properties"]["finalPrompt"]
        check(task["action"] == "DESCRIBE" and all(k in again for k in ("1️⃣", "4️⃣")) and "--ar 3:2" in again,
              f"describe 🔄 gave {task['action']} {again!r}")
        w.step("describe 🔄 retry", "a new DESCRIBE of the same image: four prompts, --ar 3:2")

    def imagine_all() -> None:
        answer = w.submit("/submit/action", {"taskId": described["id"], "customId": w.custom_id(described, "🎉")})
        ids = (answer.get("properties") or {}).get("taskIds") or []
        check(len(ids) == 4 and answer["result"] == ids[0], f"🎉 answered {answer}")
        with w._lock:
            w.task_ids.extend(ids)
        tasks = [w.wait(i) for i in ids]
        check([(t["action"], t["prompt"]) for t in tasks] == [("IMAGINE", p) for p in prompts],
              f"🎉 did not imagine the four prompts: {[t['prompt'] for t in tasks]}")
        w.step("🎉 Imagine all", "four IMAGINE tasks, one per prompt")

    parallel(picreader, retry, imagine_all)


def blend_step(w: Walker) -> None:
    colours = [Image.new("RGB", (400, 400), c) for c in ((220, 30, 30), (30, 200, 60), (40, 60, 220))]
    blended = w.new_job("/submit/blend", {"base64Array": [data_url(c) for c in colours], "dimensions": "LANDSCAPE"})
    b = w.image(blended)
    check(abs(b.width / b.height - 1.5) < 0.01, f"blend LANDSCAPE is {b.size}")
    w.step("blend 3 LANDSCAPE", f"grid {b.width}x{b.height} (3:2)")


def shorten_branch(w: Walker) -> None:
    short = w.new_job("/submit/shorten", {"prompt": "a very detailed red fox in a snowy forest"})
    check("## Shortened prompts" in short["properties"]["finalPrompt"], "shorten gave no shortened prompts")
    w.step("shorten", f"{len(short['properties']['prompts'])} shortened prompts")

    def analyse() -> None:
        task = w.modal(short, "3️⃣", {})
        check(task["prompt"] == short["properties"]["prompts"][2], "PromptAnalyzer 3 did not imagine prompt 3")
        w.step("PromptAnalyzer 3 (21 → modal)", "imagined shortened prompt 3")

    def details() -> None:
        task = w.done(short, "Show Details")
        check(task["action"] == "SHORTEN" and "## Token weights" in task["properties"]["finalPrompt"],
              f"Show Details gave {task['action']} {task['properties']['finalPrompt']!r}")
        w.step("Show Details", "SHORTEN with the token weights")

    parallel(analyse, details)


def swap_face_step(w: Walker) -> None:
    face = Image.new("RGB", (512, 512), (200, 170, 140))
    ImageDraw.Draw(face).ellipse((150, 100, 360, 400), fill=(230, 190, 160))
    target = Image.new("RGB", (640, 480), (20, 20, 60))
    swapped = w.new_job("/insight-face/swap", {"sourceBase64": data_url(face), "targetBase64": data_url(target)})
    check(w.image(swapped).size == (640, 480), "swap face changed the target size")
    w.step("swap face", "640x480, as the target")


def remix_branch(w: Walker) -> None:
    """Reroll, Variation and Pan on a Remix account: 21, a MODAL task pre-filled with the prompt, then the
    job with the prompt the client wrote."""
    w.prepare_remix()
    grid = w.new_job("/submit/imagine", {"prompt": "a red fox in snow --ar 16:9"}, remix=True)
    g = w.image(grid)
    w.step("imagine (Remix account)", w.remix_note)

    def remixed(task: dict[str, Any], prompt: str, name: str) -> None:
        check(task["properties"]["finalPrompt"] == prompt, f"{name} ignored the Remix prompt: "
                                                           f"{task['properties']['finalPrompt']!r}")

    def reroll() -> None:
        task = w.modal(grid, "🔄", {"prompt": "a red fox in the rain --ar 16:9"}, remix=True)
        remixed(task, "a red fox in the rain --ar 16:9", "Remix 🔄")
        check_grid(w, task, "REROLL", g, "Remix 🔄 (21 → modal)", unlike=g)

    def variation() -> None:
        task = w.modal(grid, "V1", {"prompt": "a grey fox in snow --ar 16:9"}, remix=True)
        remixed(task, "a grey fox in snow --ar 16:9", "Remix V1")
        check_grid(w, task, "VARIATION", g, "Remix V1 (21 → modal)")

    def pan() -> None:
        up = w.done(grid, "U1")
        u = check_upscale(w, up, g, 1, "U1 (Remix account)")
        task = w.modal(up, "➡️", {"prompt": "a red fox in snow by a river --ar 16:9"}, remix=True)
        remixed(task, "a red fox in snow by a river --ar 16:9", "Remix Pan Right")
        check_pan(w, task, u, "right", "Remix Pan Right (21 → modal)")

    parallel(reroll, variation, pan)


def cancel_step(w: Walker) -> None:
    waiting = w.submitted("/submit/imagine", {"prompt": "a job to cancel", "accountFilter": {"remix": False}})
    cancelled = w.post(f"/task/{waiting}/cancel", {})
    check(cancelled["code"] == 1, f"cancel answered {cancelled}")
    time.sleep(2)
    check(w.get(f"/task/{waiting}/fetch")["status"] == "CANCEL", "the cancelled job did not stay CANCEL")
    w.step("cancel a waiting job", "CANCEL, and it stays so")


def walk_in_parallel(base: str, secret: str, prefixes: tuple[str, ...] = ("/mj", "/mj-relax/mj")
                     ) -> tuple[dict[str, Walker], dict[str, BaseException]]:
    """Walk under each prefix at once (one thread each); returns the walkers and the errors by prefix."""
    walkers = {prefix: Walker(base, secret, prefix) for prefix in prefixes}
    errors: dict[str, BaseException] = {}

    def run(prefix: str) -> None:
        try:
            walk(walkers[prefix])
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller with its prefix
            errors[prefix] = exc

    threads = [threading.Thread(target=run, args=(p,)) for p in prefixes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return walkers, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="http://127.0.0.1:8080")
    parser.add_argument("--secret", default="")
    parser.add_argument("--prefix", default="/mj")
    args = parser.parse_args(argv)
    walker = Walker(args.base, args.secret, args.prefix)
    try:
        walk(walker)
    except WalkFailed as exc:
        print(f"FAIL {exc}", flush=True)
        return 1
    print(f"walk under {args.prefix}: {len(walker.log)} steps ok in {walker.seconds:.1f} s; Remix steps: "
          f"{walker.remix_note}; tasks: {' '.join(dict.fromkeys(walker.task_ids))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
