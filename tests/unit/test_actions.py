"""Every Midjourney action over the wire: endpoints, button sets, modals, rules and error codes."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from app.models import Account, Task
from tests.imaging import centre_box, data_url, diff
from tests.unit.conftest import drain
from tests.unit.test_executor import make_executor
from workers import queues

GRID_LABELS = ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
UPSCALE_LABELS = ["Upscale (Subtle)", "Upscale (Creative)", "Vary (Subtle)", "Vary (Strong)", "Vary (Region)",
                  "Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom", "⬅️", "➡️", "⬆️", "⬇️", "❤️"]


def labels(task: dict) -> list[str]:
    return [b["label"] or b["emoji"] for b in task["buttons"]]


def button(task: dict, label: str) -> str:
    return next(b["customId"] for b in task["buttons"] if (b["label"] or b["emoji"]) == label)


def image_of(client, task: dict) -> Image.Image:
    resp = client.get("/mj/image/" + task["imageUrl"].split("/mj/image/", 1)[1])
    assert resp.status_code == 200
    return Image.open(io.BytesIO(resp.data)).convert("RGB")


class Walk:
    """Submit requests and run the queued jobs with the executor (no Celery workers in unit tests)."""

    def __init__(self, client, celery, session_factory, redis, images, prefix="/mj"):
        self.client, self.celery, self.prefix = client, celery, prefix
        self.executor = make_executor(session_factory, redis, images)
        self.session_factory = session_factory

    def post(self, path: str, body: dict, prefix: str | None = None) -> dict:
        resp = self.client.post(f"{prefix or self.prefix}{path}", json=body)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()

    def run_queued(self) -> list[str]:
        ran = []
        for queue in (queues.FAST, queues.NORMAL):
            for msg in drain(self.celery, queue):
                self.executor.execute(int(msg["args"][0]))
                ran.append((msg["args"][0], queue))
        return ran

    def fetch(self, task_id: str) -> dict:
        return self.client.get(f"/mj/task/{task_id}/fetch").get_json()

    def done(self, answer: dict) -> dict:
        assert answer["code"] == 1, answer
        self.run_queued()
        task = self.fetch(answer["result"])
        assert task["status"] == "SUCCESS", task
        return task

    def imagine(self, prompt: str = "a red fox --ar 16:9") -> dict:
        return self.done(self.post("/submit/imagine", {"prompt": prompt}))

    def click(self, parent: dict, label: str) -> dict:
        return self.post("/submit/action", {"taskId": parent["id"], "customId": button(parent, label)})


def test_u2_upscales_cell_2_at_twice_its_size_with_the_upscale_buttons(walk, client):
    grid = walk.imagine()
    assert labels(grid) == GRID_LABELS
    up = walk.done(walk.click(grid, "U2"))
    assert (up["action"], up["description"]) == ("UPSCALE", f"/up {grid['id']} U2")
    assert labels(up) == UPSCALE_LABELS
    parent, img = image_of(client, grid), image_of(client, up)
    cell = parent.crop((parent.width // 2, 0, parent.width, parent.height // 2))
    assert img.size == (cell.width * 2, cell.height * 2)
    assert diff(img.resize(cell.size), cell) < 6
    assert up["properties"]["discordInstanceId"] == grid["properties"]["discordInstanceId"]


def test_variations_zoom_and_pan_have_the_geometry_of_their_action(walk, client):
    up = walk.done(walk.click(walk.imagine(), "U1"))
    parent = image_of(client, up)
    strong = walk.done(walk.click(up, "Vary (Strong)"))
    assert strong["action"] == "VARIATION" and labels(strong) == GRID_LABELS
    assert abs(image_of(client, strong).width / image_of(client, strong).height - 16 / 9) < 0.01

    zoom = walk.done(walk.click(up, "Zoom Out 2x"))
    assert zoom["action"] == "ZOOM" and labels(zoom) == GRID_LABELS
    z = image_of(client, zoom)
    first = z.crop((0, 0, z.width // 2, z.height // 2))
    centre = first.crop(centre_box(first.size, 2.0))
    assert diff(centre, parent.resize(centre.size)) < 8

    pan = walk.done(walk.click(up, "⬅️"))
    assert pan["action"] == "PAN" and pan["description"] == f"/up {up['id']} ⬅️"
    p = image_of(client, pan)
    pw, ph = p.width // 2, p.height // 2
    assert pw / ph == pytest.approx(1.5 * 16 / 9, rel=0.02)  # widened by half
    right = p.crop((pw - ph * 16 // 9, 0, pw, ph))
    assert diff(right, parent.resize(right.size)) < 8


def test_custom_zoom_opens_a_modal_that_takes_no_queue_slot_until_completed(walk, client, celery):
    up = walk.done(walk.click(walk.imagine(), "U3"))
    answer = walk.click(up, "Custom Zoom")
    assert answer["code"] == 21 and answer["properties"]["remix"] is False
    assert answer["properties"]["finalPrompt"].endswith("--zoom 2")
    modal = walk.fetch(answer["result"])
    assert (modal["status"], modal["action"]) == ("MODAL", "ZOOM")
    assert drain(celery, queues.FAST) == []
    for bad in ("a fox", "a fox --zoom 3", "a fox --zoom 0.5"):
        reply = walk.post("/submit/modal", {"taskId": answer["result"], "prompt": bad})
        assert reply["code"] == 4 and "--zoom" in reply["description"]
    zoomed = walk.done(walk.post("/submit/modal", {"taskId": answer["result"], "prompt": "a red fox --zoom 1.5"}))
    z, parent = image_of(client, zoomed), image_of(client, up)
    first = z.crop((0, 0, z.width // 2, z.height // 2))
    centre = first.crop(centre_box(first.size, 1.5))
    assert diff(centre, parent.resize(centre.size)) < 8
    again = walk.post("/submit/modal", {"taskId": answer["result"], "prompt": "x --zoom 1.5"})
    assert again["code"] == 4


def test_vary_region_changes_only_the_white_part_of_the_mask(walk, client):
    up = walk.done(walk.click(walk.imagine("a lighthouse"), "U1"))
    answer = walk.click(up, "Vary (Region)")
    assert answer["code"] == 21 and walk.fetch(answer["result"])["action"] == "INPAINT"
    assert walk.post("/submit/modal", {"taskId": answer["result"], "prompt": "x"})["code"] == 4
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    reply = walk.post("/submit/modal", {"taskId": answer["result"], "maskBase64": data_url(grey)})
    assert reply["code"] == 4 and "black and white" in reply["description"]
    mask = Image.new("L", (100, 100), 0)
    mask.paste(255, (50, 0, 100, 100))  # the right half changes
    varied = walk.done(walk.post("/submit/modal", {"taskId": answer["result"], "maskBase64": data_url(mask)}))
    v, parent = image_of(client, varied), image_of(client, up)
    cw, ch = v.width // 2, v.height // 2
    cell, small = v.crop((0, 0, cw, ch)), parent.resize((cw, ch))
    keep = (0, 0, cw // 2 - 4, ch)
    assert diff(cell.crop(keep), small.crop(keep)) < 1
    change = (cw // 2 + 4, 0, cw, ch)
    assert diff(cell.crop(change), small.crop(change)) > 10


def test_describe_then_picreader_and_imagine_all(walk, client, celery):
    source = Image.new("RGB", (1600, 900), (200, 40, 30))
    answer = walk.post("/submit/describe", {"base64": data_url(source)})
    task = walk.done(answer)
    assert task["description"] == f"/describe {task['id']}.png"
    assert labels(task) == ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "🔄", "Imagine all"]
    final = task["properties"]["finalPrompt"]
    assert all(k in final for k in ("1️⃣", "2️⃣", "3️⃣", "4️⃣")) and "--ar 16:9" in final
    assert image_of(client, task).size == (1600, 900)
    pick = walk.click(task, "2️⃣")
    assert pick["code"] == 21
    assert pick["properties"]["finalPrompt"] == task["properties"]["prompts"][1]
    imagined = walk.done(walk.post("/submit/modal", {"taskId": pick["result"]}))
    assert imagined["action"] == "IMAGINE" and imagined["prompt"] == task["properties"]["prompts"][1]
    all_four = walk.click(task, "Imagine all")
    assert all_four["code"] == 1 and len(all_four["properties"]["taskIds"]) == 4
    assert len(drain(celery, queues.FAST)) == 4
    retry = walk.done(walk.click(task, "🔄"))
    assert retry["action"] == "DESCRIBE"


def test_blend_composites_two_to_five_images_at_the_chosen_aspect(walk, client):
    imgs = [data_url(Image.new("RGB", (300, 300), c)) for c in ("red", "green", "blue")]
    task = walk.done(walk.post("/submit/blend", {"base64Array": imgs, "dimensions": "LANDSCAPE"}))
    assert task["description"] == f"/blend {task['id']} 3" and labels(task) == GRID_LABELS
    img = image_of(client, task)
    assert img.width / img.height == pytest.approx(1.5, rel=0.01)
    for body, field in (({"base64Array": imgs[:1]}, "base64Array"), ({"base64Array": imgs * 2}, "base64Array"),
                        ({"base64Array": imgs, "dimensions": "WIDE"}, "dimensions"),
                        ({"base64Array": imgs, "dimensions": None}, "dimensions")):
        reply = walk.post("/submit/blend", body)
        assert reply["code"] == 4 and field in reply["description"]


def test_shorten_then_prompt_analyzer(walk):
    task = walk.done(walk.post("/submit/shorten", {"prompt": "a very detailed red fox in a snowy forest --ar 16:9"}))
    final = task["properties"]["finalPrompt"]
    assert "## Important tokens" in final and "## Shortened prompts" in final
    assert labels(task) == ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "Show Details"]
    pick = walk.click(task, "3️⃣")
    assert pick["code"] == 21 and pick["properties"]["finalPrompt"] == task["properties"]["prompts"][2]
    assert walk.done(walk.post("/submit/modal", {"taskId": pick["result"]}))["action"] == "IMAGINE"
    details = walk.done(walk.click(task, "Show Details"))
    assert details["action"] == "SHORTEN" and details["prompt"] == task["prompt"]
    weights = details["properties"]["finalPrompt"].split("## Token weights\n", 1)[1].splitlines()
    prompt_words = [w for w in "a very detailed red fox in a snowy forest --ar 16:9".split() if w != "--ar"]
    assert [line.rsplit(" ", 1)[0] for line in weights] == prompt_words  # the prompt's, not the result text's


def test_swap_face_keeps_the_target_size(walk, client):
    source = data_url(Image.new("RGB", (400, 400), "orange"))
    target = data_url(Image.new("RGB", (640, 480), "navy"), "JPEG")
    task = walk.done(walk.post("/insight-face/swap", {"sourceBase64": source, "targetBase64": target}))
    assert task["action"] == "SWAP_FACE" and task["properties"]["botType"] == "INSIGHT_FACE"
    assert image_of(client, task).size == (640, 480)
    assert walk.post("/insight-face/swap", {"sourceBase64": source})["code"] == 4


def test_upload_discord_images_answers_an_array_of_urls_that_serve(walk, client):
    reply = walk.post("/submit/upload-discord-images", {"base64Array": [data_url(Image.new("RGB", (9, 9)))] * 2})
    assert reply["code"] == 1 and isinstance(reply["result"], list) and len(reply["result"]) == 2
    assert client.get("/mj/image/" + reply["result"][0].split("/mj/image/", 1)[1]).status_code == 200
    assert walk.post("/submit/upload-discord-images", {"base64Array": []})["code"] == 4


def test_image_seed_is_a_stable_number_for_a_finished_job(walk, client):
    grid = walk.imagine()
    first = client.get(f"/mj/task/{grid['id']}/image-seed").get_json()
    assert first["code"] == 1 and first["result"].isdigit()
    assert client.get(f"/mj/task/{grid['id']}/image-seed").get_json() == first
    waiting = walk.post("/submit/imagine", {"prompt": "not yet"})
    assert client.get(f"/mj/task/{waiting['result']}/image-seed").get_json()["code"] == 4
    assert client.get("/mj/task/1234567890123456789/image-seed").status_code == 404


def test_cancel_a_waiting_job_and_it_never_runs(walk, client):
    answer = walk.post("/submit/imagine", {"prompt": "cancel me"})
    reply = client.post(f"/mj/task/{answer['result']}/cancel").get_json()
    assert reply["code"] == 1
    walk.run_queued()
    task = walk.fetch(answer["result"])
    assert task["status"] == "CANCEL" and task["finishTime"] and task["imageUrl"] is None
    assert client.post(f"/mj/task/{answer['result']}/cancel").get_json()["code"] == 4
    assert client.post("/mj/task/1234567890123456789/cancel").status_code == 404


def test_list_by_ids_is_an_alias_of_list_by_condition(walk, client):
    a = walk.post("/submit/imagine", {"prompt": "a"})["result"]
    assert [t["id"] for t in client.post("/mj/task/list-by-ids", json={"ids": [a]}).get_json()] == [a]


def test_legacy_change_and_simple_change(walk):
    grid = walk.imagine()
    up = walk.done(walk.post("/submit/change", {"taskId": grid["id"], "action": "UPSCALE", "index": 2}))
    assert up["description"] == f"/up {grid['id']} U2"
    var = walk.post("/submit/simple-change", {"content": f"{grid['id']} v3"})
    assert walk.fetch(var["result"])["description"] == f"/up {grid['id']} V3"
    reroll = walk.post("/submit/simple-change", {"content": f"{grid['id']} R"})
    assert walk.fetch(reroll["result"])["action"] == "REROLL"
    for body in ({"taskId": grid["id"], "action": "UPSCALE", "index": 5},
                 {"taskId": grid["id"], "action": "UPSCALE"},
                 {"taskId": grid["id"], "action": "UPSCALE", "index": None},
                 {"taskId": grid["id"], "action": "ZOOM", "index": 1},
                 {"action": "UPSCALE", "index": 1}):
        assert walk.post("/submit/change", body)["code"] == 4
    assert walk.post("/submit/change", {"taskId": up["id"], "action": "UPSCALE", "index": 1})["code"] == 4
    for content in ("", "U2", f"{grid['id']}U2", f"{grid['id']} U5", f"{grid['id']} X1"):
        assert walk.post("/submit/simple-change", {"content": content})["code"] == 4


def test_action_rules_give_clear_codes(walk):
    grid = walk.imagine()
    assert walk.post("/submit/action", {"taskId": "1234567890123456789", "customId": "x"})["code"] == 3
    waiting = walk.post("/submit/imagine", {"prompt": "busy"})
    reply = walk.post("/submit/action", {"taskId": waiting["result"], "customId": button(grid, "U1")})
    assert reply["code"] == 4 and "SUCCESS" in reply["description"]
    reply = walk.post("/submit/action", {"taskId": grid["id"], "customId": "MJ::JOB::upsample::1::not-this-job"})
    assert reply["code"] == 4 and "not a button" in reply["description"]
    assert walk.post("/submit/action", {"taskId": grid["id"]})["code"] == 4
    for prefix, other in (("/mj-relax/mj", "RELAX"), ("/mj-turbo/mj", "TURBO")):
        reply = walk.post("/submit/action", {"taskId": grid["id"], "customId": button(grid, "U1")}, prefix=prefix)
        assert reply["code"] == 4 and "FAST" in reply["description"] and other in reply["description"]
    same = walk.post("/submit/action", {"taskId": grid["id"], "customId": button(grid, "U1")}, prefix="/mj-fast/mj")
    assert same["code"] == 1 and walk.fetch(same["result"])["properties"]["mode"] == "FAST"


def test_a_remix_account_opens_modals_for_reroll_variation_and_pan(walk, session_factory):
    grid = walk.imagine()
    with session_factory() as s:
        s.get(Account, grid["properties"]["discordInstanceId"]).remix = True
        s.commit()
    for label in ("🔄", "V2"):
        answer = walk.click(grid, label)
        assert answer["code"] == 21 and answer["properties"]["remix"] is True
    assert walk.click(grid, "U1")["code"] == 1
    up = walk.done(walk.click(grid, "U2"))
    assert walk.click(up, "⬇️")["code"] == 21
    remixed = walk.post("/submit/modal", {"taskId": walk.click(grid, "V1")["result"], "prompt": "a blue fox"})
    task = walk.done(remixed)
    assert task["action"] == "VARIATION" and task["prompt"] == "a blue fox"


def test_bookmark_marks_the_parent_without_a_job(walk, celery):
    up = walk.done(walk.click(walk.imagine(), "U4"))
    reply = walk.click(up, "❤️")
    assert reply["code"] == 1 and reply["result"] == up["id"]
    assert drain(celery, queues.FAST) == []


def test_a_relax_walk_stays_on_the_normal_queue(client, celery, session_factory, redis, images):
    walk = Walk(client, celery, session_factory, redis, images, prefix="/mj-relax/mj")
    grid = walk.imagine()
    answer = walk.click(grid, "U2")
    queued = walk.run_queued()
    assert [q for _, q in queued] == [queues.NORMAL]
    up = walk.fetch(answer["result"])
    zoom = walk.click(up, "Zoom Out 1.5x")
    assert [q for _, q in walk.run_queued()] == [queues.NORMAL]
    with session_factory() as s:
        assert s.get(Task, int(zoom["result"])).queue == queues.NORMAL


def test_banned_words_are_refused_with_code_24_for_imagine_shorten_and_modal(walk, session_factory):
    reply = walk.post("/submit/imagine", {"prompt": "a Nude figure --ar 2:3"})
    assert reply["code"] == 24 and reply["result"] is None
    assert reply["properties"] == {"promptEn": "a Nude figure --ar 2:3", "bannedWord": "Nude"}
    assert walk.post("/submit/shorten", {"prompt": "gore everywhere"})["code"] == 24
    up = walk.done(walk.click(walk.imagine(), "U1"))
    modal = walk.click(up, "Custom Zoom")
    reply = walk.post("/submit/modal", {"taskId": modal["result"], "prompt": "a nude fox --zoom 1.5"})
    assert reply["code"] == 24 and walk.fetch(modal["result"])["status"] == "MODAL"
    with session_factory() as s:
        assert s.query(Task).filter(Task.prompt.like("%ude%")).count() == 0


def test_a_chinese_prompt_is_translated_for_upstream_while_prompt_keeps_the_original(
        settings, celery, redis, accounts, session_factory):
    from dataclasses import replace

    from app import create_app
    from tests.fakes.translation_server import FakeTranslationServer

    with FakeTranslationServer() as fake:
        translated = replace(settings, translator="OPENAI", openai_base_url=f"{fake.url}/v1",
                             openai_api_key="sk-test")
        client = create_app(translated, celery=celery, redis=redis).test_client()
        body = client.post("/mj/submit/imagine", json={"prompt": "https://example.com/a.png 红色的狐狸 --ar 16:9"}
                           ).get_json()
        task = client.get(f"/mj/task/{body['result']}/fetch").get_json()
        assert task["prompt"] == "https://example.com/a.png 红色的狐狸 --ar 16:9"
        assert task["promptEn"] == "https://example.com/a.png a red fox --ar 16:9"
        assert len(fake.requests) == 1


def test_a_cancel_is_announced_to_the_webhook_like_any_other_change(walk, client, session_factory):
    from app.models import WebhookDelivery

    answer = walk.post("/submit/imagine", {"prompt": "cancel me", "notifyHook": "https://hooks.example.com/mj"})
    assert client.post(f"/mj/task/{answer['result']}/cancel").get_json()["code"] == 1
    with session_factory() as s:
        deliveries = s.query(WebhookDelivery).filter_by(task_id=int(answer["result"])).all()
    assert [d.task_status for d in deliveries] == ["CANCEL"]
