"""The scripted walk through every Midjourney action, against a running mjq (e.g. `make run`).

    .venv/bin/python -m tests.e2e.action_walk --base http://127.0.0.1:8080 --secret S [--prefix /mj-relax/mj]

Each step submits over HTTP as a client would, waits for the expected status, and checks
the geometry its action implies on the downloaded image. It prints one line per step and
exits non-zero on the first failed check.
"""
from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from PIL import Image

from tests.imaging import cell, centre_box, data_url, diff

#: How long one step may take to reach its status, in seconds.
STEP_TIMEOUT_SECONDS = 90
#: Largest mean pixel difference still counted as "the same picture" after resampling.
SAME = 8.0


class WalkFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise WalkFailed(message)


@dataclass
class Walker:
    base: str
    secret: str = ""
    prefix: str = "/mj"
    log: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = requests.Session()
        if self.secret:
            self.http.headers["mj-api-secret"] = self.secret

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post(f"{self.base}{self.prefix}{path}", json=body, timeout=30)
        check(resp.status_code == 200, f"POST {path} answered HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()  # type: ignore[no-any-return]

    def get(self, path: str) -> Any:
        return self.http.get(f"{self.base}{self.prefix}{path}", timeout=30).json()

    def wait(self, task_id: str, status: str = "SUCCESS") -> dict[str, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            task = self.get(f"/task/{task_id}/fetch")
            if task["status"] == status:
                return task  # type: ignore[no-any-return]
            check(task["status"] not in ("FAILURE", "CANCEL", "SUCCESS"),
                  f"task {task_id} ended {task['status']} ({task['failReason']}), expected {status}")
            time.sleep(0.2)
        raise WalkFailed(f"task {task_id} did not reach {status} in {STEP_TIMEOUT_SECONDS}s")

    def submitted(self, answer: dict[str, Any], code: int = 1) -> str:
        check(answer.get("code") == code, f"expected code {code}, got {answer}")
        self.task_ids.append(answer["result"])
        return str(answer["result"])

    def click(self, parent: dict[str, Any], label: str, code: int = 1) -> str:
        custom_id = next((b["customId"] for b in parent["buttons"] if (b["label"] or b["emoji"]) == label), None)
        check(custom_id is not None, f"task {parent['id']} has no button {label!r}")
        return self.submitted(self.post("/submit/action", {"taskId": parent["id"], "customId": custom_id}), code)

    def image(self, task: dict[str, Any]) -> Image.Image:
        resp = self.http.get(task["imageUrl"], timeout=30)
        check(resp.status_code == 200, f"image of {task['id']} answered {resp.status_code}")
        return Image.open(io.BytesIO(resp.content)).convert("RGB")

    def step(self, name: str, detail: str) -> None:
        line = f"ok  {name:<28} {detail}"
        self.log.append(line)
        print(line, flush=True)


def walk(w: Walker) -> None:
    """imagine → U2 → Vary (Strong) → Zoom Out 2x → Pan Left → Custom Zoom → Vary (Region) → describe an
    uploaded image → PicReader 2 → blend 3 LANDSCAPE → shorten → PromptAnalyzer 3 → swap face → image-seed →
    cancel a waiting job."""
    grid = w.wait(w.submitted(w.post("/submit/imagine", {"prompt": "a red fox in snow --ar 16:9"})))
    g = w.image(grid)
    check(abs(g.width / g.height - 16 / 9) < 0.01 and g.height >= 1024, f"imagine grid is {g.size}")
    w.step("imagine", f"grid {g.width}x{g.height}, {len(grid['buttons'])} buttons")

    up = w.wait(w.click(grid, "U2"))
    u = w.image(up)
    c2 = cell(g, 2)
    check(u.size == (c2.width * 2, c2.height * 2), f"U2 is {u.size}, cell 2 is {c2.size}")
    check(diff(u.resize(c2.size), c2) < SAME, "U2 does not show cell 2")
    w.step("U2", f"{u.width}x{u.height} = 2x cell 2 ({c2.width}x{c2.height})")

    strong = w.wait(w.click(up, "Vary (Strong)"))
    s = w.image(strong)
    check(strong["action"] == "VARIATION" and abs(s.width / s.height - u.width / u.height) < 0.01,
          f"Vary (Strong) is {strong['action']} {s.size}")
    w.step("Vary (Strong)", f"new grid {s.width}x{s.height}, same aspect")

    zoom = w.wait(w.click(up, "Zoom Out 2x"))
    z1 = cell(w.image(zoom), 1)
    centre = z1.crop(centre_box(z1.size, 2.0))
    check(diff(centre, u.resize(centre.size)) < SAME, "Zoom Out 2x does not show the image at half size in the centre")
    w.step("Zoom Out 2x", f"cell {z1.width}x{z1.height}, old image at half size in the centre")

    pan = w.wait(w.click(up, "⬅️"))
    p1 = cell(w.image(pan), 1)
    old_w = round(p1.height * u.width / u.height)
    check(abs(p1.width - 1.5 * old_w) <= 2, f"Pan Left cell is {p1.size}, expected width {1.5 * old_w}")
    right = p1.crop((p1.width - old_w, 0, p1.width, p1.height))
    check(diff(right, u.resize(right.size)) < SAME, "Pan Left does not keep the old image on the right")
    w.step("Pan Left", f"cell {p1.width}x{p1.height}: widened 1.5x, old image on the right")

    modal = w.click(up, "Custom Zoom", code=21)
    check(w.get(f"/task/{modal}/fetch")["status"] == "MODAL", "Custom Zoom did not wait in MODAL")
    custom = w.wait(w.submitted(w.post("/submit/modal", {"taskId": modal, "prompt": "a red fox in snow --zoom 1.5"})))
    k1 = cell(w.image(custom), 1)
    centre = k1.crop(centre_box(k1.size, 1.5))
    check(diff(centre, u.resize(centre.size)) < SAME, "Custom Zoom 1.5 does not show the image at 1/1.5 size")
    w.step("Custom Zoom (21 → 1.5)", "old image at 1/1.5 size in the centre")

    modal = w.click(up, "Vary (Region)", code=21)
    mask = Image.new("L", (200, 100), 0)
    mask.paste(255, (100, 0, 200, 100))
    region = w.wait(w.submitted(w.post("/submit/modal", {"taskId": modal, "maskBase64": data_url(mask)})))
    r1 = cell(w.image(region), 1)
    small = u.resize(r1.size)
    keep, change = (0, 0, r1.width // 2 - 4, r1.height), (r1.width // 2 + 4, 0, r1.width, r1.height)
    check(diff(r1.crop(keep), small.crop(keep)) < 1.5, "Vary (Region) changed the black (kept) area")
    check(diff(r1.crop(change), small.crop(change)) > 10, "Vary (Region) did not change the white area")
    w.step("Vary (Region) (21 → mask)", "left half unchanged, right half new")

    photo = Image.new("RGB", (1200, 800), (30, 90, 200))
    urls = w.post("/submit/upload-discord-images", {"base64Array": [data_url(photo)]})
    check(urls["code"] == 1 and isinstance(urls["result"], list), f"upload answered {urls}")
    uploaded = Image.open(io.BytesIO(w.http.get(urls["result"][0], timeout=30).content)).convert("RGB")
    described = w.wait(w.submitted(w.post("/submit/describe", {"base64": data_url(uploaded)})))
    final = described["properties"]["finalPrompt"]
    check(all(k in final for k in ("1️⃣", "2️⃣", "3️⃣", "4️⃣")) and "--ar 3:2" in final, f"describe gave {final!r}")
    w.step("describe uploaded image", "four prompts, --ar 3:2")

    modal = w.click(described, "2️⃣", code=21)
    reimagined = w.wait(w.submitted(w.post("/submit/modal", {"taskId": modal})))
    check(reimagined["action"] == "IMAGINE" and reimagined["prompt"] == described["properties"]["prompts"][1],
          "PicReader 2 did not imagine prompt 2")
    w.step("PicReader 2 (21 → modal)", "imagined prompt 2")

    colours = [Image.new("RGB", (400, 400), c) for c in ((220, 30, 30), (30, 200, 60), (40, 60, 220))]
    blended = w.wait(w.submitted(w.post("/submit/blend", {"base64Array": [data_url(c) for c in colours],
                                                         "dimensions": "LANDSCAPE"})))
    b = w.image(blended)
    check(abs(b.width / b.height - 1.5) < 0.01, f"blend LANDSCAPE is {b.size}")
    w.step("blend 3 LANDSCAPE", f"grid {b.width}x{b.height} (3:2)")

    short = w.wait(w.submitted(w.post("/submit/shorten", {"prompt": "a very detailed red fox in a snowy forest"})))
    check("## Shortened prompts" in short["properties"]["finalPrompt"], "shorten gave no shortened prompts")
    w.step("shorten", f"{len(short['properties']['prompts'])} shortened prompts")

    modal = w.click(short, "3️⃣", code=21)
    analysed = w.wait(w.submitted(w.post("/submit/modal", {"taskId": modal})))
    check(analysed["prompt"] == short["properties"]["prompts"][2], "PromptAnalyzer 3 did not imagine prompt 3")
    w.step("PromptAnalyzer 3 (21 → modal)", "imagined shortened prompt 3")

    target = Image.new("RGB", (640, 480), (20, 20, 60))
    swapped = w.wait(w.submitted(w.post("/insight-face/swap", {"sourceBase64": data_url(u),
                                                              "targetBase64": data_url(target)})))
    check(w.image(swapped).size == (640, 480), "swap face changed the target size")
    w.step("swap face", "640x480, as the target")

    seed = w.get(f"/task/{grid['id']}/image-seed")
    check(seed["code"] == 1 and str(seed["result"]).isdigit(), f"image-seed answered {seed}")
    check(w.get(f"/task/{grid['id']}/image-seed") == seed, "image-seed is not stable")
    w.step("image-seed", str(seed["result"]))

    waiting = w.submitted(w.post("/submit/imagine", {"prompt": "a job to cancel"}))
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
    print(f"walk under {args.prefix}: {len(walker.log)} steps ok, tasks: {' '.join(dict.fromkeys(walker.task_ids))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
