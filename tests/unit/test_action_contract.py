"""The action contract of issue 3, checked through the API with the simulator run by the executor.

Every button set with its exact custom ids, labels and emoji; every button run to completion with
the geometry its action implies; modals that take no queue slot; and each rule and error code.
Expected custom ids are written out here, not taken from app/buttons.py, so a drift from
Midjourney's formats (midjourney-proxy-protocol.md §4.8) fails.
"""
from __future__ import annotations

import base64
import io
import secrets
from dataclasses import replace

import pytest
from PIL import Image
from sqlalchemy import select

from app import create_app
from app.models import Account, WebhookDelivery
from app.services.prompts import PromptChecker
from tests.fakes.translation_server import FakeTranslationServer
from tests.imaging import cell, centre_box, data_url, diff
from tests.unit.conftest import drain
from tests.unit.test_actions import Walk, button, image_of
from tests.unit.test_submit_imagine import count_tasks
from workers import queues
from workers.scheduler import pool_of
from workers.webhook_outbox import WebhookOutbox

UNKNOWN_ID = "1234567890123456789"
KEYCAPS = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣"]
PAN = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}


# -- the button sets, as Midjourney shows them ----------------------------------------------------

def grid_set(h: str) -> list[tuple[str, str, str]]:
    """(customId, label, emoji) under a 2×2 grid whose job hash is `h`."""
    return [*((f"MJ::JOB::upsample::{i}::{h}", f"U{i}", "") for i in range(1, 5)),
            (f"MJ::JOB::reroll::0::{h}::SOLO", "", "🔄"),
            *((f"MJ::JOB::variation::{i}::{h}", f"V{i}", "") for i in range(1, 5))]


def upscale_set(h: str, upscalers: bool = True) -> list[tuple[str, str, str]]:
    """Under an upscaled image; an image made by Upscale (Subtle/Creative) has no upscalers again."""
    head = [(f"MJ::JOB::upsample_v6_2x_subtle::1::{h}::SOLO", "Upscale (Subtle)", ""),
            (f"MJ::JOB::upsample_v6_2x_creative::1::{h}::SOLO", "Upscale (Creative)", "")] if upscalers else []
    return [*head,
            (f"MJ::JOB::low_variation::1::{h}::SOLO", "Vary (Subtle)", "🪄"),
            (f"MJ::JOB::high_variation::1::{h}::SOLO", "Vary (Strong)", "🪄"),
            (f"MJ::Inpaint::1::{h}::SOLO", "Vary (Region)", "🖌️"),
            (f"MJ::Outpaint::50::1::{h}::SOLO", "Zoom Out 2x", "🔍"),
            (f"MJ::Outpaint::75::1::{h}::SOLO", "Zoom Out 1.5x", "🔍"),
            (f"MJ::CustomZoom::{h}", "Custom Zoom", "🔍"),
            *((f"MJ::JOB::pan_{d}::1::{h}::SOLO", "", e) for d, e in PAN.items()),
            (f"MJ::BOOKMARK::{h}", "", "❤️")]


DESCRIBE_SET = [*((f"MJ::Job::PicReader::{i}", "", KEYCAPS[i - 1]) for i in range(1, 5)),
                ("MJ::Picread::Retry", "", "🔄"), ("MJ::Job::PicReader::all", "Imagine all", "🎉")]


def shorten_set(h: str) -> list[tuple[str, str, str]]:
    return [*((f"MJ::Job::PromptAnalyzer::{i}", "", KEYCAPS[i - 1]) for i in range(1, 6)),
            (f"MJ::Job::PromptAnalyzerExtended::{h}", "Show Details", "")]


def shown(task: dict) -> list[tuple[str, str, str]]:
    assert all(b["type"] == 2 for b in task["buttons"])
    return [(b["customId"], b["label"], b["emoji"]) for b in task["buttons"]]


def own_hash(task: dict, parent: dict | None = None) -> str:
    """The job hash a result's buttons must carry: its own, never its parent's."""
    h = task["properties"]["messageHash"]
    assert len(h) == 36 and (parent is None or h != parent["properties"]["messageHash"])
    return h


# -- helpers ----------------------------------------------------------------------------------------

def upscaled(walk: Walk, prompt: str = "a red fox --ar 16:9", label: str = "U1") -> dict:
    return walk.done(walk.click(walk.imagine(prompt), label))


def sent(celery) -> list[str]:
    """Task ids of every mj.execute message waiting on the job queues (drains them)."""
    return [m["args"][0] for q in (queues.FAST, queues.NORMAL) for m in drain(celery, q)]


def admitted(app, task: dict) -> bool:
    """Whether the scheduler queued `task` on its account (it sits in the account's waiting set)."""
    scheduler = app.extensions["mjq"].scheduler
    pool = pool_of(task["properties"]["mode"])
    return int(task["id"]) in scheduler.waiting(task["properties"]["discordInstanceId"], pool)


def set_remix(session_factory, account_id: str) -> None:
    with session_factory() as s:
        s.get(Account, account_id).remix = True
        s.commit()


def dominant_shares(image: Image.Image) -> tuple[float, float, float]:
    """The share of pixels whose strongest channel is red, green, blue."""
    pixels = list(image.resize((160, 100)).getdata())
    counts = [0, 0, 0]
    for p in pixels:
        counts[max(range(3), key=lambda i: p[i])] += 1
    return counts[0] / len(pixels), counts[1] / len(pixels), counts[2] / len(pixels)


def noisy_png_url(size: int = 64) -> str:
    """A PNG that does not compress (random pixels): size² × 3 bytes and more."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), secrets.token_bytes(size * size * 3)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (100, 100), 0)
    mask.paste(255, (50, 0, 100, 100))
    return mask


# -- button sets and every button run to completion -------------------------------------------------

def test_an_imagine_grid_shows_u1_to_u4_reroll_and_v1_to_v4_with_its_own_job_hash(walk):
    grid = walk.imagine()
    assert shown(grid) == grid_set(own_hash(grid))


def test_an_upscale_shows_the_upscale_set_with_its_own_job_hash(walk):
    grid = walk.imagine()
    up = walk.done(walk.click(grid, "U3"))
    assert shown(up) == upscale_set(own_hash(up, grid))


@pytest.mark.parametrize("label", ["Upscale (Subtle)", "Upscale (Creative)"])
def test_upscale_subtle_and_creative_double_the_upscaled_image_and_offer_no_upscaler_again(walk, client, label):
    up = upscaled(walk, "a red fox")
    big = walk.done(walk.click(up, label))
    assert (big["action"], big["description"]) == ("UPSCALE", f"/up {up['id']} {label}")
    assert shown(big) == upscale_set(own_hash(big, up), upscalers=False)
    parent, img = image_of(client, up), image_of(client, big)
    assert img.size == (parent.width * 2, parent.height * 2)
    assert diff(img.resize(parent.size), parent) < 3


@pytest.mark.parametrize("label", ["Vary (Subtle)", "Vary (Strong)"])
def test_vary_subtle_and_strong_give_a_grid_of_takes_on_the_upscaled_image(walk, client, label):
    up = upscaled(walk, "a lighthouse on a cliff --ar 16:9")
    varied = walk.done(walk.click(up, label))
    assert (varied["action"], varied["description"]) == ("VARIATION", f"/up {up['id']} {label}")
    assert shown(varied) == grid_set(own_hash(varied, up))
    parent, img = image_of(client, up), image_of(client, varied)
    cells = [cell(img, i) for i in range(1, 5)]
    assert cells[0].width / cells[0].height == pytest.approx(16 / 9, rel=0.01)
    small = parent.resize(cells[0].size)
    distances = [diff(c, small) for c in cells]
    # Every cell changed, yet the grid is recognisably the parent (an unrelated image is ~40 away).
    assert min(distances) > 1 and sum(distances) / 4 < 32


@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_v1_to_v4_vary_their_own_cell_without_a_modal_on_a_non_remix_account(walk, client, index):
    grid = walk.imagine("a lighthouse on a cliff")
    answer = walk.click(grid, f"V{index}")
    assert answer["code"] == 1
    varied = walk.done(answer)
    assert (varied["action"], varied["description"]) == ("VARIATION", f"/up {grid['id']} V{index}")
    assert shown(varied) == grid_set(own_hash(varied, grid))
    parent, img = image_of(client, grid), image_of(client, varied)
    assert img.size == parent.size

    def distance_to(source: int) -> float:
        return sum(diff(cell(img, k), cell(parent, source)) for k in range(1, 5)) / 4

    assert min(range(1, 5), key=distance_to) == index


@pytest.mark.parametrize("direction, widens", [("right", True), ("up", False), ("down", False)])
def test_pan_extends_the_canvas_towards_the_arrow_and_keeps_the_old_image_opposite(walk, client, direction, widens):
    up = upscaled(walk)
    pan = walk.done(walk.click(up, PAN[direction]))
    assert (pan["action"], pan["description"]) == ("PAN", f"/up {up['id']} {PAN[direction]}")
    assert shown(pan) == grid_set(own_hash(pan, up))
    parent, first = image_of(client, up), cell(image_of(client, pan), 1)
    ratio = first.width / first.height
    assert ratio == pytest.approx(1.5 * 16 / 9 if widens else (16 / 9) / 1.5, rel=0.02)
    w, h = first.size
    if direction == "right":
        old = (0, 0, h * 16 // 9, h)
    elif direction == "up":
        old = (0, h - w * 9 // 16, w, h)
    else:
        old = (0, 0, w, w * 9 // 16)
    kept = first.crop(old)
    assert diff(kept, parent.resize(kept.size)) < 8


def test_zoom_out_1_5x_shows_the_old_image_at_two_thirds_in_the_centre(walk, client):
    up = upscaled(walk)
    zoom = walk.done(walk.click(up, "Zoom Out 1.5x"))
    assert (zoom["action"], zoom["description"]) == ("ZOOM", f"/up {up['id']} Zoom Out 1.5x")
    assert shown(zoom) == grid_set(own_hash(zoom, up))
    parent, first = image_of(client, up), cell(image_of(client, zoom), 1)
    assert first.width / first.height == pytest.approx(16 / 9, rel=0.01)
    centre = first.crop(centre_box(first.size, 1.5))
    assert diff(centre, parent.resize(centre.size)) < 8


def test_reroll_of_an_imagine_is_a_new_grid_of_the_same_prompt(walk, client):
    grid = walk.imagine()
    again = walk.done(walk.click(grid, "🔄"))
    assert (again["action"], again["description"], again["prompt"]) == ("REROLL", f"/up {grid['id']} R",
                                                                        grid["prompt"])
    assert shown(again) == grid_set(own_hash(again, grid))
    before, after = image_of(client, grid), image_of(client, again)
    assert after.size == before.size and diff(after, before) > 10


def test_blend_and_its_reroll_take_their_colours_from_the_inputs(walk, client):
    red, blue = (data_url(Image.new("RGB", (300, 300), c)) for c in ((255, 0, 0), (0, 0, 255)))
    blend = walk.done(walk.post("/submit/blend", {"base64Array": [red, blue], "dimensions": "PORTRAIT"}))
    assert shown(blend) == grid_set(own_hash(blend))
    again = walk.done(walk.click(blend, "🔄"))
    assert (again["action"], again["description"]) == ("REROLL", f"/up {blend['id']} R")
    assert shown(again) == grid_set(own_hash(again, blend))
    first, second = image_of(client, blend), image_of(client, again)
    assert second.size == first.size and second.width / second.height == pytest.approx(2 / 3, rel=0.01)
    assert diff(first, second) > 3
    for img in (first, second):
        r, g, b = dominant_shares(img)
        assert r > 0.1 and b > 0.1 and g < 0.01  # red and blue in, so no green out

    green = data_url(Image.new("RGB", (300, 300), (0, 255, 0)))
    three = walk.done(walk.post("/submit/blend", {"base64Array": [red, blue, green]}))
    assert all(share > 0.08 for share in dominant_shares(image_of(client, three)))


@pytest.mark.parametrize("body, action, short", [
    ({"action": "VARIATION", "index": 2}, "VARIATION", "V2"),
    ({"action": "REROLL"}, "REROLL", "R"),
])
def test_submit_change_variation_and_reroll_run_to_a_new_grid(walk, client, body, action, short):
    grid = walk.imagine()
    task = walk.done(walk.post("/submit/change", {"taskId": grid["id"], **body}))
    assert (task["action"], task["description"]) == (action, f"/up {grid['id']} {short}")
    assert shown(task) == grid_set(own_hash(task, grid))
    assert image_of(client, task).size == image_of(client, grid).size


@pytest.mark.parametrize("encode, ext", [
    (lambda img: data_url(img, "PNG"), "png"), (lambda img: data_url(img, "JPEG"), "jpg"),
    (lambda img: data_url(img, "WEBP"), "webp"), (lambda img: data_url(img, "GIF"), "gif"),
])
def test_describe_names_the_image_by_its_type_and_shows_the_picreader_set(walk, encode, ext):
    task = walk.done(walk.post("/submit/describe", {"base64": encode(Image.new("RGB", (640, 480), "teal"))}))
    assert task["description"] == f"/describe {task['id']}.{ext}"
    assert "--ar 4:3" in task["properties"]["finalPrompt"]
    assert shown(task) == DESCRIBE_SET


def test_shorten_and_show_details_show_the_prompt_analyzer_set(walk):
    task = walk.done(walk.post("/submit/shorten", {"prompt": "a very detailed red fox in a snowy forest"}))
    assert shown(task) == shorten_set(own_hash(task))
    details = walk.done(walk.click(task, "Show Details"))
    assert shown(details) == shorten_set(own_hash(details, task))


def test_a_face_swap_result_has_no_buttons(walk):
    source, target = (data_url(Image.new("RGB", (200, 200), c)) for c in ("orange", "navy"))
    task = walk.done(walk.post("/insight-face/swap", {"sourceBase64": source, "targetBase64": target}))
    assert task["buttons"] == []


# -- modals -----------------------------------------------------------------------------------------

def _modal_parent(walk: Walk, kind: str) -> dict:
    if kind == "grid":
        return walk.imagine()
    if kind == "upscale":
        return upscaled(walk)
    if kind == "describe":
        return walk.done(walk.post("/submit/describe", {"base64": data_url(Image.new("RGB", (300, 200), "red"))}))
    return walk.done(walk.post("/submit/shorten", {"prompt": "a red fox in a snowy forest"}))


@pytest.mark.parametrize("parent_kind, label, remix, body", [
    ("upscale", "Custom Zoom", False, {"prompt": "a red fox --zoom 1.5"}),
    ("upscale", "Vary (Region)", False, {"maskBase64": data_url(right_half_mask())}),
    ("describe", "2️⃣", False, {}),
    ("shorten", "3️⃣", False, {}),
    ("grid", "🔄", True, {"prompt": "a blue fox"}),
    ("grid", "V2", True, {"prompt": "a blue fox"}),
    ("upscale", "Vary (Strong)", True, {"prompt": "a blue fox"}),
    ("upscale", "⬅️", True, {"prompt": "a blue fox"}),
])
def test_a_modal_takes_no_queue_slot_until_it_is_submitted(walk, app, celery, session_factory, parent_kind, label,
                                                           remix, body):
    parent = _modal_parent(walk, parent_kind)
    if remix:
        set_remix(session_factory, parent["properties"]["discordInstanceId"])
    answer = walk.click(parent, label)
    assert answer["code"] == 21 and answer["properties"]["remix"] is remix
    modal = walk.fetch(answer["result"])
    assert modal["status"] == "MODAL"
    assert sent(celery) == [] and not admitted(app, modal)

    completed = walk.post("/submit/modal", {"taskId": modal["id"], **body})
    assert completed["code"] == 1
    waiting = walk.fetch(modal["id"])
    assert waiting["status"] == "NOT_START" and admitted(app, waiting)
    assert sent(celery) == [modal["id"]]


def test_a_modal_task_can_be_cancelled_and_then_never_runs(walk, app, client, celery):
    modal = walk.click(upscaled(walk), "Custom Zoom")["result"]
    reply = client.post(f"/mj/task/{modal}/cancel").get_json()
    assert reply["code"] == 1
    task = walk.fetch(modal)
    assert task["status"] == "CANCEL" and task["finishTime"]
    late = walk.post("/submit/modal", {"taskId": modal, "prompt": "a red fox --zoom 1.5"})
    assert late["code"] == 4 and "CANCEL" in late["description"]
    assert sent(celery) == [] and not admitted(app, walk.fetch(modal))


def test_a_cancel_that_lands_while_the_modal_is_being_submitted_wins(walk, app, client, celery):
    modal = walk.click(upscaled(walk), "Custom Zoom")["result"]
    services = app.extensions["mjq"]
    real = services.prompts

    def translate_while_a_cancel_lands(prompt: str) -> str:
        # The modal request has read the task (MODAL) and is preparing its prompt: the cancel goes first.
        assert client.post(f"/mj/task/{modal}/cancel").get_json()["code"] == 1
        return real.translate(prompt)

    services.prompts = PromptChecker(translate_while_a_cancel_lands, real.find)
    reply = walk.post("/submit/modal", {"taskId": modal, "prompt": "a red fox --zoom 1.5"})
    assert reply["code"] == 4 and "no longer waiting for a modal" in reply["description"]
    assert reply["result"] is None
    task = walk.fetch(modal)
    assert task["status"] == "CANCEL" and task["prompt"] != "a red fox --zoom 1.5"
    assert sent(celery) == [] and not admitted(app, task)


# -- rules --------------------------------------------------------------------------------------------

def test_a_follow_up_runs_on_its_parents_account_even_when_another_account_is_idler(walk, session_factory):
    with session_factory() as s:
        for account in s.scalars(select(Account)):
            account.fast_concurrency = 1  # one waiting job makes an account busier than an idle one
        s.commit()
    grid = walk.done(walk.post("/submit/imagine", {"prompt": "a red fox", "accountFilter": {"instanceId": "sim-1"}}))
    walk.post("/submit/imagine", {"prompt": "keeps sim-1 busy", "accountFilter": {"instanceId": "sim-1"}})
    # BestWaitIdle sends a new job to the idle account...
    assert walk.post("/submit/imagine", {"prompt": "a new job"})["properties"]["discordInstanceId"] == "sim-2"
    # ...but a click on the parent stays where the parent ran.
    answer = walk.click(grid, "U1")
    assert answer["properties"]["discordInstanceId"] == "sim-1"
    walk.run_queued()
    up = walk.fetch(answer["result"])
    assert (up["status"], up["properties"]["discordInstanceId"]) == ("SUCCESS", "sim-1")


def _mode_requests(walk: Walk, grid: dict) -> list[tuple[str, dict]]:
    modal = walk.click(walk.done(walk.click(grid, "U2")), "Custom Zoom")["result"]
    return [("/submit/action", {"taskId": grid["id"], "customId": button(grid, "U1")}),
            ("/submit/change", {"taskId": grid["id"], "action": "UPSCALE", "index": 1}),
            ("/submit/simple-change", {"content": f"{grid['id']} U1"}),
            ("/submit/modal", {"taskId": modal, "prompt": "a red fox --zoom 1.5"})]


def test_a_mode_prefix_other_than_the_parents_mode_is_refused_naming_both_modes(walk, celery, session_factory):
    grid = walk.imagine()  # FAST
    requests = _mode_requests(walk, grid)
    before = count_tasks(session_factory)
    for path, body in requests:
        for prefix, other in (("/mj-turbo/mj", "TURBO"), ("/mj-relax/mj", "RELAX")):
            reply = walk.post(path, body, prefix=prefix)
            assert reply["code"] == 4 and reply["result"] is None, (path, prefix, reply)
            assert "FAST" in reply["description"] and other in reply["description"], (path, reply)
    assert count_tasks(session_factory) == before and sent(celery) == []
    assert walk.fetch(requests[-1][1]["taskId"])["status"] == "MODAL"
    for path, body in requests:
        reply = walk.post(path, body, prefix="/mj-fast/mj")
        assert reply["code"] == 1, (path, reply)
        assert walk.fetch(reply["result"])["properties"]["mode"] == "FAST"


def test_a_turbo_parent_refuses_a_fast_prefix_and_keeps_turbo_without_one(walk):
    grid = walk.done(walk.post("/submit/imagine", {"prompt": "a red fox"}, prefix="/mj-turbo/mj"))
    body = {"taskId": grid["id"], "customId": button(grid, "U1")}
    reply = walk.post("/submit/action", body, prefix="/mj-fast/mj")
    assert reply["code"] == 4 and "TURBO" in reply["description"] and "FAST" in reply["description"]
    plain = walk.post("/submit/action", body)
    assert walk.fetch(plain["result"])["properties"]["mode"] == "TURBO"


def test_a_follow_up_keeps_its_own_state_and_notify_hook(walk, session_factory):
    walk.executor.listeners = [WebhookOutbox()]
    grid = walk.done(walk.post("/submit/imagine", {"prompt": "a red fox", "state": "parent",
                                                   "notifyHook": "https://hooks.example.com/parent"}))
    state = '  {"step": "U2", "note": "猫猫 ✨"}\n'
    hook = "https://hooks.example.com/child"
    answer = walk.post("/submit/action", {"taskId": grid["id"], "customId": button(grid, "U2"), "state": state,
                                          "notifyHook": hook, "chooseSameChannel": True})
    up = walk.done(answer)
    assert up["state"] == state and up["properties"]["notifyHook"] == hook
    with session_factory() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.task_id == int(up["id"]))).all()
    assert {r.url for r in rows} == {hook} and "SUCCESS" in {r.task_status for r in rows}


@pytest.mark.parametrize("choose_same_channel", [True, False])
def test_choose_same_channel_is_accepted(walk, choose_same_channel):
    grid = walk.imagine()
    reply = walk.post("/submit/action", {"taskId": grid["id"], "customId": button(grid, "U1"),
                                         "chooseSameChannel": choose_same_channel})
    assert reply["code"] == 1


def test_an_account_filter_naming_another_account_than_the_parents_is_code_4(walk, celery, session_factory):
    grid = walk.imagine()
    mine = grid["properties"]["discordInstanceId"]
    other = "sim-2" if mine == "sim-1" else "sim-1"
    before = count_tasks(session_factory)
    for path, body in (("/submit/action", {"taskId": grid["id"], "customId": button(grid, "U1")}),
                       ("/submit/change", {"taskId": grid["id"], "action": "UPSCALE", "index": 1})):
        reply = walk.post(path, {**body, "accountFilter": {"instanceId": other}})
        assert reply["code"] == 4 and reply["result"] is None
        assert "accountFilter.instanceId" in reply["description"]
        assert other in reply["description"] and mine in reply["description"]
    assert count_tasks(session_factory) == before and sent(celery) == []
    same = walk.post("/submit/action", {"taskId": grid["id"], "customId": button(grid, "U1"),
                                        "accountFilter": {"instanceId": mine}})
    assert same["code"] == 1 and same["properties"]["discordInstanceId"] == mine


def test_unknown_task_ids_are_code_3_and_a_404_on_the_task_endpoints(walk, client):
    reply = walk.post("/submit/modal", {"taskId": UNKNOWN_ID, "prompt": "a fox --zoom 1.5"})
    assert reply["code"] == 3 and reply["result"] is None and UNKNOWN_ID in reply["description"]
    for resp in (client.get(f"/mj/task/{UNKNOWN_ID}/image-seed"), client.post(f"/mj/task/{UNKNOWN_ID}/cancel")):
        assert resp.status_code == 404
        body = resp.get_json()
        assert set(body) == {"code", "description", "result", "properties"}
        assert body["code"] == 3 and body["result"] is None and UNKNOWN_ID in body["description"]


# -- banned words -------------------------------------------------------------------------------------

def test_shorten_and_modal_prompts_with_a_banned_word_are_code_24_naming_it(walk, session_factory):
    reply = walk.post("/submit/shorten", {"prompt": "gore everywhere --ar 1:1"})
    assert (reply["code"], reply["result"]) == (24, None)
    assert reply["properties"] == {"promptEn": "gore everywhere --ar 1:1", "bannedWord": "gore"}
    modal = walk.click(upscaled(walk), "Custom Zoom")["result"]
    before = count_tasks(session_factory)
    reply = walk.post("/submit/modal", {"taskId": modal, "prompt": "a Nude fox --zoom 1.5"})
    assert (reply["code"], reply["result"]) == (24, None)
    assert reply["properties"] == {"promptEn": "a Nude fox --zoom 1.5", "bannedWord": "Nude"}
    assert walk.fetch(modal)["status"] == "MODAL" and count_tasks(session_factory) == before


@pytest.fixture
def translating_walk(settings, celery, redis, accounts, session_factory, images, tmp_path):
    """A walk through an app that translates with the fake OpenAI server and bans the word "dog"."""
    words = tmp_path / "banned.txt"
    words.write_text("dog\n", encoding="utf-8")
    with FakeTranslationServer() as fake:
        translated = replace(settings, translator="OPENAI", openai_base_url=f"{fake.url}/v1",
                             openai_api_key="sk-test", banned_words_file=str(words))
        client = create_app(translated, celery=celery, redis=redis).test_client()
        yield Walk(client, celery, session_factory, redis, images)


def test_a_cjk_prompt_whose_translation_holds_a_banned_word_is_code_24(translating_walk, session_factory):
    walk = translating_walk
    modal = walk.click(walk.done(walk.click(walk.imagine("a red fox"), "U1")), "Custom Zoom")["result"]
    before = count_tasks(session_factory)
    for path, body in (("/submit/imagine", {"prompt": "狗 在月亮上 --ar 1:1"}),
                       ("/submit/shorten", {"prompt": "狗 在月亮上 --ar 1:1"}),
                       ("/submit/modal", {"taskId": modal, "prompt": "狗 在月亮上 --zoom 1.5"})):
        reply = walk.post(path, body)
        assert (reply["code"], reply["result"]) == (24, None), (path, reply)
        assert reply["properties"]["bannedWord"] == "dog"
        assert reply["properties"]["promptEn"].startswith("dog on the moon --")
    assert count_tasks(session_factory) == before and walk.fetch(modal)["status"] == "MODAL"
    assert walk.post("/submit/imagine", {"prompt": "猫 在月亮上"})["code"] == 1


# -- input limits -------------------------------------------------------------------------------------

def test_a_jpeg_mask_for_vary_region_is_refused_naming_the_field(walk, images):
    modal = walk.click(upscaled(walk), "Vary (Region)")["result"]
    reply = walk.post("/submit/modal", {"taskId": modal, "maskBase64": data_url(right_half_mask().convert("RGB"),
                                                                                 "JPEG")})
    assert reply["code"] == 4 and "maskBase64 must be a PNG" in reply["description"]
    assert walk.fetch(modal)["status"] == "MODAL" and images.get(f"{modal}/mask.png") is None


def test_blend_accepts_five_images_and_refuses_six(walk, session_factory):
    imgs = [data_url(Image.new("RGB", (64, 64), c)) for c in ("red", "green", "blue", "white", "black", "grey")]
    assert walk.post("/submit/blend", {"base64Array": imgs[:5]})["code"] == 1
    before = count_tasks(session_factory)
    reply = walk.post("/submit/blend", {"base64Array": imgs})
    assert reply["code"] == 4 and "base64Array" in reply["description"] and "6" in reply["description"]
    assert count_tasks(session_factory) == before


def test_the_image_size_cap_applies_to_face_swap_uploads_and_the_mask(settings, celery, redis, accounts,
                                                                      session_factory, images):
    capped = replace(settings, max_image_bytes=2048)
    walk = Walk(create_app(capped, celery=celery, redis=redis).test_client(), celery, session_factory, redis, images)
    modal = walk.click(upscaled(walk), "Vary (Region)")["result"]
    big, small = noisy_png_url(), data_url(Image.new("RGB", (8, 8)))
    before = count_tasks(session_factory)
    for path, body, field in (("/insight-face/swap", {"sourceBase64": big, "targetBase64": small}, "sourceBase64"),
                              ("/insight-face/swap", {"sourceBase64": small, "targetBase64": big}, "targetBase64"),
                              ("/submit/upload-discord-images", {"base64Array": [big]}, "base64Array[0]"),
                              ("/submit/modal", {"taskId": modal, "maskBase64": big}, "maskBase64")):
        reply = walk.post(path, body)
        assert reply["code"] == 4 and field in reply["description"] and "2048 bytes" in reply["description"], path
    assert count_tasks(session_factory) == before and walk.fetch(modal)["status"] == "MODAL"
    assert not (images.root / "uploads").exists() and images.get(f"{modal}/mask.png") is None


# -- the prompt fields, as midjourney-proxy fills them (midjourney-proxy-protocol.md §1.3) ----------

def served(client, url: str) -> Image.Image:
    resp = client.get(url.removeprefix("http://mjq.test"))
    assert resp.status_code == 200, url
    return Image.open(io.BytesIO(resp.data)).convert("RGB")


def test_pad_images_lead_prompt_prompt_en_and_description_but_the_upstream_gets_the_prompt_alone(walk, client):
    answer = walk.post("/submit/imagine", {"prompt": "a red fox --ar 16:9",
                                           "base64Array": [data_url(Image.new("RGB", (40, 30), (255, 0, 0)))]})
    waiting = walk.fetch(answer["result"])
    url = waiting["prompt"].split(" ", 1)[0]
    assert waiting["prompt"] == waiting["promptEn"] == f"{url} a red fox --ar 16:9"
    assert waiting["description"] == f"/imagine {url} a red fox --ar 16:9"
    pad = served(client, url)
    assert pad.size == (40, 30) and pad.getpixel((0, 0)) == (255, 0, 0)
    task = walk.done(answer)
    assert (task["prompt"], task["description"]) == (waiting["prompt"], waiting["description"])
    assert task["properties"]["finalPrompt"] == "a red fox --ar 16:9"  # what the simulator was asked to draw


def test_a_describe_result_becomes_its_prompt_and_prompt_en(walk):
    answer = walk.post("/submit/describe", {"base64": data_url(Image.new("RGB", (64, 48), "teal"))})
    assert walk.fetch(answer["result"])["prompt"] is None
    task = walk.done(answer)
    text = task["properties"]["finalPrompt"]
    assert text.startswith("1️⃣ ") and task["prompt"] == task["promptEn"] == text


def test_a_blend_takes_its_prompt_from_the_start_message_the_images_links_and_aspect(walk, client):
    red, blue = (data_url(Image.new("RGB", (32, 32), c)) for c in ((255, 0, 0), (0, 0, 255)))
    answer = walk.post("/submit/blend", {"base64Array": [red, blue], "dimensions": "PORTRAIT"})
    assert walk.fetch(answer["result"])["prompt"] is None
    task = walk.done(answer)
    assert task["prompt"] == task["promptEn"] == task["properties"]["finalPrompt"]
    first, second, ar, aspect = task["prompt"].split(" ")
    assert (ar, aspect) == ("--ar", "2:3")
    assert [served(client, link.strip("<>")).getpixel((0, 0)) for link in (first, second)] == [(255, 0, 0),
                                                                                              (0, 0, 255)]


def test_follow_ups_copy_the_parents_prompt_prompt_en_and_final_prompt(settings, celery, redis, accounts,
                                                                       session_factory, images):
    with FakeTranslationServer() as fake:
        translated = replace(settings, translator="OPENAI", openai_base_url=f"{fake.url}/v1",
                             openai_api_key="sk-test")
        walk = Walk(create_app(translated, celery=celery, redis=redis).test_client(), celery, session_factory,
                    redis, images)
        grid = walk.imagine("红色的狐狸 --ar 16:9")
        assert (grid["prompt"], grid["promptEn"]) == ("红色的狐狸 --ar 16:9", "a red fox --ar 16:9")
        for answer in (walk.post("/submit/change", {"taskId": grid["id"], "action": "UPSCALE", "index": 1}),
                       walk.post("/submit/simple-change", {"content": f"{grid['id']} V2"}),
                       walk.click(grid, "🔄")):
            waiting = walk.fetch(answer["result"])
            assert (waiting["prompt"], waiting["promptEn"], waiting["properties"]["finalPrompt"]) == (
                grid["prompt"], grid["promptEn"], grid["properties"]["finalPrompt"]), waiting["description"]
            assert walk.done(answer)["prompt"] == "红色的狐狸 --ar 16:9"
