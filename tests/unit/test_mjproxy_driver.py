"""The mjproxy driver against a fake upstream midjourney-proxy: every submit code, the modal
flow, notify hooks through Redis, the batched polling fallback, image copies, resume and cancel."""
from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

import pytest
from PIL import Image

from app import protocol
from app.crypto import SecretBox, generate_key
from app.models import Task
from app.services.account_admin import account_secrets, create_account
from config import Settings
from tests.fakes.fake_mjproxy import FakeMjproxy, Reply
from tests.imaging import data_url
from workers.drivers.mjproxy import MjproxyDriver
from workers.drivers.mjproxy_client import Endpoint, UpstreamClient
from workers.drivers.mjproxy_watch import UpstreamWatch, callback_signature
from workers.events import TaskEvents
from workers.executor import DONE, FAILED, LOST, Executor
from workers.scheduler import Scheduler

KEY = generate_key()
ACCOUNT = "up-1"
HASH = "0b5e9f3c-7d2a-4d1e-9c1b-4f7a2e6d8c10"
GRID = [protocol.button(f"MJ::JOB::upsample::{i}::{HASH}", label=f"U{i}") for i in range(1, 5)]
UPSCALED = [protocol.button(f"MJ::CustomZoom::{HASH}", label="Custom Zoom", emoji="🔍"),
            protocol.button(f"MJ::Inpaint::1::{HASH}::SOLO", label="Vary (Region)", emoji="🖌️")]


@pytest.fixture
def settings(tmp_path, sqlite_url) -> Settings:
    return Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path), public_url="http://mjq.test",
                             secret_key=KEY)


@pytest.fixture
def fake():
    with FakeMjproxy() as upstream:
        yield upstream


@pytest.fixture
def accounts(session_factory, fake) -> None:
    """One mjproxy account on the fake upstream (replaces the simulator accounts of the unit app)."""
    with session_factory() as session:
        create_account(session, {"id": ACCOUNT, "name": "Upstream", "driver": "mjproxy",
                                 "settings": {"baseUrl": fake.url, "secret": fake.secret}}, SecretBox.from_key(KEY))


class Harness:
    """The driver (short timeouts, recorded sleeps) inside an executor, run on a thread per job."""

    def __init__(self, client, session_factory, redis, images, poll_seconds: float = 0.05,
                 timeout_seconds: float = 2.0, scheduler: Scheduler | None = None) -> None:
        self.client = client
        self.session_factory = session_factory
        self.sleeps: list[float] = []
        http = UpstreamClient(timeout_seconds)
        self.watch = UpstreamWatch(redis, http, poll_seconds, listen_wait_seconds=0.05)
        self.driver = MjproxyDriver(images, http, self.watch, session_factory, "http://mjq.test", KEY,
                                    sleep=self.sleeps.append, liveness_check_seconds=0.1)
        box = SecretBox.from_key(KEY)
        # The executor's busy backoffs are recorded, not slept.
        self.executor = Executor(session_factory, redis, {"mjproxy": self.driver}, "fast@test/1",
                                 secrets=lambda account: account_secrets(account, box), scheduler=scheduler,
                                 sleep=self.sleeps.append)
        self.outcomes: dict[int, str] = {}
        self.threads: list[threading.Thread] = []

    def start(self, task_id: int) -> threading.Thread:
        thread = threading.Thread(target=lambda: self.outcomes.__setitem__(task_id, self.executor.execute(task_id)))
        thread.start()
        self.threads.append(thread)
        return thread

    def run(self, task_id: int, timeout: float = 10.0) -> str:
        thread = self.start(task_id)
        thread.join(timeout)
        assert not thread.is_alive(), f"task {task_id} still running"
        return self.outcomes[task_id]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post(f"/mj{path}", json=body).get_json()
        assert answer["code"] in (1, 21, 22), answer
        return answer

    def fetch(self, task_id: int | str) -> dict[str, Any]:
        return self.client.get(f"/mj/task/{task_id}/fetch").get_json()

    def row(self, task_id: int) -> Task:
        with self.session_factory() as session:
            task = session.get(Task, task_id)
            assert task is not None
            return task


@pytest.fixture
def harness(client, session_factory, redis, images):
    h = Harness(client, session_factory, redis, images)
    yield h
    h.watch.stop()
    for thread in h.threads:
        thread.join(timeout=5)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def decoded(data_url_text: str) -> bytes:
    return base64.b64decode(data_url_text.split(",", 1)[1])


def finish(fake: FakeMjproxy, upstream_id: str, image: bytes, buttons=GRID, name: str = f"{HASH}.png",
           **properties: Any) -> None:
    url = fake.serve_image(name, image)
    fake.update(upstream_id, status="SUCCESS", progress="100%", imageUrl=url, buttons=buttons,
                properties={"messageHash": HASH, "finalPrompt": "a red fox", **properties})


def imagine(h: Harness, fake: FakeMjproxy, prompt: str = "a red fox", **body: Any) -> tuple[int, str]:
    """Submit an imagine on mjq, run it, finish it upstream; returns (mjq id, upstream id)."""
    task_id = int(h.post("/submit/imagine", {"prompt": prompt, **body})["result"])
    h.start(task_id)
    return task_id, fake.task_for(str(task_id))


def test_an_imagine_goes_upstream_with_its_images_secret_mode_state_and_a_signed_notify_hook(harness, fake, images):
    task_id, upstream_id = imagine(harness, fake, base64Array=[data_url(Image.new("RGB", (40, 30), (9, 9, 9)))])
    call = fake.calls_to("/submit/imagine")[0]
    assert call.headers["Mj-Api-Secret"] == "up-secret"
    assert call.body["prompt"] == "a red fox" and call.body["botType"] == "MID_JOURNEY"
    assert call.body["state"] == str(task_id) and call.body["accountFilter"] == {"modes": ["FAST"]}
    assert decoded(call.body["base64Array"][0]) == images.get(f"{task_id}/images-0.png")
    assert call.body["notifyHook"] == (f"http://mjq.test/internal/mjproxy/{ACCOUNT}/notify"
                                       f"?sig={callback_signature(KEY, ACCOUNT)}")
    # The upstream leads its promptEn with its own links of the pads; mjq's prompt fields keep mjq's.
    fake.update(upstream_id, promptEn="https://cdn.upstream.test/pad.png a red fox")
    finish(fake, upstream_id, png((200, 10, 10)))
    harness.threads[0].join(10)
    assert harness.outcomes[task_id] == DONE
    assert harness.row(task_id).upstream_id == f"{ACCOUNT}:{upstream_id}"
    pad_url = f"http://mjq.test/mj/image/{task_id}/images-0.png"
    task = harness.fetch(task_id)
    assert (task["prompt"], task["promptEn"]) == (f"{pad_url} a red fox", f"{pad_url} a red fox")


def test_a_job_followed_by_polling_alone_gets_the_upstream_image_copied_with_its_buttons_and_properties(
        harness, fake, client, images):
    seen: list[dict[str, Any]] = []
    harness.executor.listeners = [lambda data, seq: seen.append(data)]
    task_id, upstream_id = imagine(harness, fake)
    preview = fake.serve_image("progress-46.webp", b"RIFF-preview", "image/webp")
    fake.update(upstream_id, status="IN_PROGRESS", progress="46%", imageUrl=preview)
    for _ in range(100):
        if any(e["progress"] == "46%" for e in seen):
            break
        time.sleep(0.02)
    final = png((10, 200, 10), (128, 72))
    finish(fake, upstream_id, final, seed="1234", discordInstanceId="someone-else", nonce="1")
    harness.threads[0].join(10)
    task = harness.fetch(task_id)
    assert (task["status"], task["progress"]) == ("SUCCESS", "100%")
    assert task["imageUrl"] == f"http://mjq.test/mj/image/{task_id}/{HASH}.png"
    assert client.get(f"/mj/image/{task_id}/{HASH}.png").data == final
    assert task["buttons"] == GRID
    props = task["properties"]
    assert (props["messageHash"], props["seed"], props["upstreamTaskId"]) == (HASH, "1234", upstream_id)
    assert props["discordInstanceId"] == ACCOUNT and props["nonce"] != "1"
    progress = next(e for e in seen if e["progress"] == "46%")
    assert progress["imageUrl"] == f"http://mjq.test/mj/image/{task_id}/progress-46.webp"
    assert images.get(f"{task_id}/progress-46.webp") == b"RIFF-preview"


def test_code_22_from_the_upstream_is_accepted_and_followed(harness, fake):
    fake.script("/submit/imagine", Reply(code=22, description="In queue"))
    task_id, upstream_id = imagine(harness, fake)
    finish(fake, upstream_id, png((1, 2, 3)))
    harness.threads[0].join(10)
    assert harness.fetch(task_id)["status"] == "SUCCESS"


def test_a_follow_up_clicks_the_same_custom_id_on_the_parents_upstream_task(harness, fake):
    parent_id, parent_upstream = imagine(harness, fake)
    finish(fake, parent_upstream, png((5, 5, 5)))
    harness.threads[0].join(10)
    custom_id = GRID[1]["customId"]
    child = int(harness.post("/submit/action", {"taskId": str(parent_id), "customId": custom_id})["result"])
    harness.start(child)
    call = fake.wait_for_call("/submit/action")
    assert call.body["taskId"] == parent_upstream and call.body["customId"] == custom_id
    assert "accountFilter" not in call.body  # the upstream keeps the parent's mode itself
    finish(fake, fake.task_for(str(child)), png((6, 6, 6)), name="upscaled.png")
    harness.threads[-1].join(10)
    assert harness.fetch(child)["status"] == "SUCCESS"


def upscaled_parent(harness: Harness, fake: FakeMjproxy) -> tuple[int, str]:
    parent_id, parent_upstream = imagine(harness, fake)
    finish(fake, parent_upstream, png((50, 60, 70), (128, 96)), buttons=UPSCALED)
    harness.threads[0].join(10)
    return parent_id, parent_upstream


def test_custom_zoom_answers_21_upstream_and_the_modal_is_completed_with_the_jobs_prompt(harness, fake):
    parent_id, parent_upstream = upscaled_parent(harness, fake)
    modal = harness.post("/submit/action", {"taskId": str(parent_id), "customId": UPSCALED[0]["customId"]})
    assert modal["code"] == 21
    harness.post("/submit/modal", {"taskId": modal["result"], "prompt": "a red fox --zoom 1.5"})
    harness.start(int(modal["result"]))
    clicked = fake.wait_for_call("/submit/action")
    completed = fake.wait_for_call("/submit/modal")
    modal_upstream = fake.task_for(modal["result"])
    assert clicked.body["taskId"] == parent_upstream
    assert completed.body == {"taskId": modal_upstream, "prompt": "a red fox --zoom 1.5"}
    finish(fake, modal_upstream, png((1, 1, 1)), name="zoomed.png")
    harness.threads[-1].join(10)
    assert harness.row(int(modal["result"])).upstream_id == f"{ACCOUNT}:{modal_upstream}"


def test_vary_region_sends_the_mask_with_the_upstream_modal(harness, fake, images):
    parent_id, _ = upscaled_parent(harness, fake)
    modal = harness.post("/submit/action", {"taskId": str(parent_id), "customId": UPSCALED[1]["customId"]})
    mask = Image.new("L", (20, 10), 0)
    mask.paste(255, (10, 0, 20, 10))
    harness.post("/submit/modal", {"taskId": modal["result"], "maskBase64": data_url(mask)})
    harness.start(int(modal["result"]))
    completed = fake.wait_for_call("/submit/modal")
    assert decoded(completed.body["maskBase64"]) == images.get(f"{modal['result']}/mask.png")
    assert completed.body["maskBase64"].startswith("data:image/png;base64,")
    finish(fake, fake.task_for(modal["result"]), png((1, 1, 1)))
    harness.threads[-1].join(10)


def test_a_busy_upstream_is_tried_again_after_a_backoff_and_the_job_goes_on(harness, fake):
    fake.script("/submit/imagine", Reply(code=23, description="queue full"))
    task_id, upstream_id = imagine(harness, fake)
    fake.wait_for_call("/submit/imagine", count=2)
    assert harness.sleeps == [2.0]
    finish(fake, upstream_id, png((1, 1, 1)))
    harness.threads[0].join(10)
    assert harness.outcomes[task_id] == DONE


@pytest.mark.parametrize(("code", "label"), [(23, "[Queue full]"), (3, "[Upstream unavailable]")])
def test_an_upstream_that_stays_busy_fails_the_job_naming_the_code_after_every_backoff(harness, fake, code, label):
    fake.script("/submit/imagine", *[Reply(code=code, description="try later")] * 4)
    task_id = int(harness.post("/submit/imagine", {"prompt": "a fox"})["result"])
    assert harness.run(task_id) == FAILED
    reason = harness.fetch(task_id)["failReason"]
    assert reason.startswith(label) and f"(code {code})" in reason
    assert reason.endswith(f"gave up after 4 tries (accounts tried: {ACCOUNT})")
    assert harness.sleeps == [2.0, 5.0, 15.0] and len(fake.calls_to("/submit/imagine")) == 4


@pytest.fixture
def second(session_factory, accounts):
    """A second upstream behind a second mjproxy account, up-2."""
    with FakeMjproxy() as upstream:
        with session_factory() as session:
            create_account(session, {"id": "up-2", "name": "Upstream 2", "driver": "mjproxy",
                                     "settings": {"baseUrl": upstream.url, "secret": upstream.secret}},
                           SecretBox.from_key(KEY))
        yield upstream


@pytest.fixture
def slots(client, session_factory, redis, images):
    """The harness with the scheduler the API admits into (fakeredis): slots are taken and given back for real."""
    scheduler = Scheduler(redis)
    h = Harness(client, session_factory, redis, images, scheduler=scheduler)
    h.scheduler = scheduler  # type: ignore[attr-defined]
    yield h
    h.watch.stop()
    for thread in h.threads:
        thread.join(timeout=5)


def test_a_new_job_refused_as_busy_moves_to_another_eligible_account_with_its_slot_and_runs_there(
        slots, fake, second):
    fake.script("/submit/imagine", Reply(code=23, description="queue full"))
    task_id = int(slots.post("/submit/imagine", {"prompt": "a fox", "accountFilter": {"instanceId": ACCOUNT}})[
        "result"])
    slots.start(task_id)
    upstream_id = second.task_for(str(task_id))
    assert (slots.scheduler.holders(ACCOUNT, "fast"), slots.scheduler.holders("up-2", "fast")) == (0, 1)
    assert slots.scheduler.waiting(ACCOUNT, "fast") == []
    finish(second, upstream_id, png((7, 7, 7)))
    slots.threads[0].join(10)
    assert slots.outcomes[task_id] == DONE and slots.sleeps == []
    task = slots.fetch(task_id)
    assert task["status"] == "SUCCESS"
    assert (task["properties"]["discordInstanceId"], task["properties"]["movedFrom"]) == ("up-2", [ACCOUNT])
    assert slots.row(task_id).upstream_id == f"up-2:{upstream_id}"
    assert len(fake.calls_to("/submit/imagine")) == 1 and slots.scheduler.holders("up-2", "fast") == 0


def test_a_job_busy_on_every_account_fails_after_the_backoffs_naming_the_accounts_it_tried(harness, fake, second):
    fake.script("/submit/imagine", Reply(code=23, description="queue full"))
    second.script("/submit/imagine", *[Reply(code=23, description="queue full")] * 4)
    task_id = int(harness.post("/submit/imagine", {"prompt": "a fox", "accountFilter": {"instanceId": ACCOUNT}})[
        "result"])
    assert harness.run(task_id) == FAILED
    assert harness.fetch(task_id)["failReason"].endswith(f"gave up after 5 tries (accounts tried: {ACCOUNT}, up-2)")
    assert harness.sleeps == [2.0, 5.0, 15.0]
    assert (len(fake.calls_to("/submit/imagine")), len(second.calls_to("/submit/imagine"))) == (1, 4)


def test_a_follow_up_refused_as_busy_stays_on_its_parents_account_and_waits_off_its_slot(slots, fake, second):
    parent_id, parent_upstream = imagine(slots, fake, accountFilter={"instanceId": ACCOUNT})
    finish(fake, parent_upstream, png((5, 5, 5)))
    slots.threads[0].join(10)
    fake.script("/submit/action", *[Reply(code=3, description="the parent's account is down")] * 2)
    held_while_waiting: list[int] = []
    slots.executor.sleep = lambda seconds: (slots.sleeps.append(seconds),
                                            held_while_waiting.append(slots.scheduler.holders(ACCOUNT, "fast")))
    child = int(slots.post("/submit/action", {"taskId": str(parent_id), "customId": GRID[1]["customId"]})["result"])
    slots.start(child)
    finish(fake, fake.task_for(str(child)), png((6, 6, 6)), name="upscaled.png")
    slots.threads[-1].join(10)
    assert slots.fetch(child)["status"] == "SUCCESS" and slots.row(child).account_id == ACCOUNT
    assert slots.sleeps == [2.0, 5.0] and held_while_waiting == [0, 0]
    assert len(fake.calls_to("/submit/action")) == 3 and second.calls == []


@pytest.mark.parametrize(("reply", "expected"), [
    (Reply(code=24, description="may contain banned words", properties={"bannedWord": "gore"}),
     "[Banned prompt detected] the upstream refused the prompt for the word 'gore'"),
    (Reply(code=4, description="prompt must not be empty"), "[Invalid parameter] "),
    (Reply(code=9, description="system error"), "[Upstream error] "),
    (Reply(http_status=500), "[Upstream error] "),
    (Reply(http_status=401), "[Upstream refused] "),
])
def test_an_upstream_refusal_fails_the_job_with_a_reason_saying_why(harness, fake, reply, expected):
    fake.script("/submit/imagine", reply)
    task_id = int(harness.post("/submit/imagine", {"prompt": "a fox"})["result"])
    assert harness.run(task_id) == FAILED
    reason = harness.fetch(task_id)["failReason"]
    assert reason.startswith(expected), reason
    assert {500: "HTTP 500", 401: "check the account's secret"}.get(reply.http_status, reply.description) in reason
    assert harness.sleeps == [] and len(fake.calls_to("/submit/imagine")) == 1


def test_an_upstream_that_refuses_the_notify_hook_gets_the_job_without_it_and_is_polled(harness, fake):
    fake.script("/submit/imagine", Reply(code=4, description="notifyHook must name a domain, not an IP address"))
    task_id, upstream_id = imagine(harness, fake)
    first, second = fake.calls_to("/submit/imagine")
    assert "notifyHook" in first.body and "notifyHook" not in second.body
    assert {k: v for k, v in first.body.items() if k != "notifyHook"} == second.body
    finish(fake, upstream_id, png((2, 2, 2)))
    harness.threads[0].join(10)
    assert harness.outcomes[task_id] == DONE


def test_an_upstream_that_does_not_answer_fails_the_job_after_the_timeout(client, session_factory, redis, images,
                                                                         fake):
    h = Harness(client, session_factory, redis, images, timeout_seconds=0.3)
    fake.script("/submit/imagine", Reply(delay_seconds=1.5))
    task_id = int(h.post("/submit/imagine", {"prompt": "a fox"})["result"])
    started = time.monotonic()
    assert h.run(task_id) == FAILED
    assert time.monotonic() - started < 1.4
    assert h.fetch(task_id)["failReason"].startswith("[Upstream timeout] ")
    h.watch.stop()


def test_an_upstream_failure_becomes_the_jobs_fail_reason(harness, fake):
    task_id, upstream_id = imagine(harness, fake)
    fake.update(upstream_id, status="FAILURE", progress="", failReason="[Invalid parameter] Unrecognized --sim")
    harness.threads[0].join(10)
    task = harness.fetch(task_id)
    assert (task["status"], task["failReason"]) == ("FAILURE", "[Invalid parameter] Unrecognized --sim")


def test_notify_events_reach_the_following_worker_through_redis_without_polling(client, session_factory, redis,
                                                                               images, fake):
    h = Harness(client, session_factory, redis, images, poll_seconds=600)
    task_id = int(h.post("/submit/imagine", {"prompt": "a fox"})["result"])
    h.start(task_id)
    hook = fake.wait_for_call("/submit/imagine").body["notifyHook"].removeprefix("http://mjq.test")
    upstream_id = fake.task_for(str(task_id))
    for _ in range(100):  # the hub subscribes on its own thread
        if redis.execute_command("PUBSUB", "NUMPAT"):
            break
        time.sleep(0.02)
    assert client.post(hook, json=fake.update(upstream_id, status="IN_PROGRESS", progress="31%")).status_code == 200
    finish(fake, upstream_id, png((3, 3, 3)))
    answer = client.post(hook, json=fake.tasks[upstream_id])
    assert answer.status_code == 200 and answer.get_json()["properties"]["listeners"] == 1
    h.threads[0].join(10)
    assert h.outcomes[task_id] == DONE and h.fetch(task_id)["status"] == "SUCCESS"
    assert h.watch.polls == 0 and fake.calls_to("/task/list-by-condition") == []
    h.watch.stop()


def test_the_notify_hook_refuses_a_wrong_or_foreign_signature_and_a_body_that_is_not_a_task(client):
    good = callback_signature(KEY, ACCOUNT)
    task = {"id": "1700000000000001", "status": "SUCCESS", "properties": {}, "buttons": []}
    assert client.post(f"/internal/mjproxy/{ACCOUNT}/notify?sig={'0' * 64}", json=task).status_code == 401
    assert client.post(f"/internal/mjproxy/{ACCOUNT}/notify", json=task).status_code == 401
    foreign = callback_signature(KEY, "other")
    assert client.post(f"/internal/mjproxy/{ACCOUNT}/notify?sig={foreign}", json=task).status_code == 401
    assert client.post(f"/internal/mjproxy/{ACCOUNT}/notify?sig={good}", data="[1]",
                       content_type="application/json").status_code == 400
    bad = client.post(f"/internal/mjproxy/{ACCOUNT}/notify?sig={good}", json={**task, "status": "DONE"})
    assert bad.get_json()["code"] == 4 and "status" in bad.get_json()["description"]
    assert client.post(f"/internal/mjproxy/{ACCOUNT}/notify?sig={good}", json=task).get_json()["code"] == 1


def test_one_poll_per_account_covers_every_task_followed_there(fake):
    other = FakeMjproxy(secret=None)
    with other:
        client = UpstreamClient(2.0)
        watch = UpstreamWatch(None, client, 600)
        ids = [fake._new_task("IMAGINE", "SUBMITTED", {})["id"] for _ in range(3)]
        other_id = other._new_task("IMAGINE", "SUBMITTED", {})["id"]
        watches = [watch.open(ACCOUNT, Endpoint(fake.url, fake.secret), i) for i in ids]
        watches.append(watch.open("up-2", Endpoint(other.url), other_id))
        assert watch.poll_once() == 4
        assert [sorted(c.body["ids"]) for c in fake.calls_to("/task/list-by-condition")] == [sorted(ids)]
        assert [c.body["ids"] for c in other.calls_to("/task/list-by-condition")] == [[other_id]]
        assert [w.next(0)["id"] for w in watches] == [*ids, other_id]
        watch.stop()


def test_a_redelivered_execution_follows_the_recorded_upstream_task_without_submitting_again(harness, fake):
    class WorkerDied(BaseException):
        pass

    follow = harness.driver.follow

    def dies(job, ref, reporter):
        raise WorkerDied()

    harness.driver.follow = dies  # type: ignore[method-assign]
    task_id = int(harness.post("/submit/imagine", {"prompt": "a fox"})["result"])
    with pytest.raises(WorkerDied):
        harness.executor.execute(task_id)
    upstream_id = fake.task_for(str(task_id))
    assert harness.row(task_id).upstream_id == f"{ACCOUNT}:{upstream_id}"
    harness.driver.follow = follow  # type: ignore[method-assign]
    finish(fake, upstream_id, png((4, 4, 4)))
    assert harness.run(task_id) == DONE
    assert len(fake.calls_to("/submit/imagine")) == 1 and harness.fetch(task_id)["status"] == "SUCCESS"


def test_cancelling_the_job_on_mjq_cancels_it_upstream_and_frees_the_follower(harness, fake):
    task_id, upstream_id = imagine(harness, fake)
    assert harness.client.post(f"/mj/task/{task_id}/cancel").get_json()["code"] == 1
    harness.threads[0].join(10)
    assert harness.outcomes[task_id] == LOST
    assert fake.wait_for_call(f"/task/{upstream_id}/cancel") and fake.tasks[upstream_id]["status"] == "CANCEL"
    assert harness.fetch(task_id)["status"] == "CANCEL"


def test_a_job_cancelled_while_its_submit_is_on_the_wire_is_cancelled_upstream_as_soon_as_it_is_accepted(
        harness, fake):
    fake.script("/submit/imagine", Reply(delay_seconds=0.5))
    task_id = int(harness.post("/submit/imagine", {"prompt": "a fox"})["result"])
    harness.start(task_id)
    fake.wait_for_call("/submit/imagine")
    assert harness.client.post(f"/mj/task/{task_id}/cancel").get_json()["code"] == 1
    harness.threads[0].join(10)
    upstream_id = fake.task_for(str(task_id))
    assert harness.outcomes[task_id] == LOST and fake.tasks[upstream_id]["status"] == "CANCEL"
    assert harness.fetch(task_id)["status"] == "CANCEL"


def test_a_job_failed_by_the_sweeper_stops_its_follower_and_its_upstream_job(harness, fake):
    task_id, upstream_id = imagine(harness, fake)
    TaskEvents(harness.session_factory, None, task_id, None).transition(
        status="FAILURE", failReason="timed out: no progress from the upstream for 5 min")
    harness.threads[0].join(10)
    assert harness.outcomes[task_id] == LOST
    assert fake.wait_for_call(f"/task/{upstream_id}/cancel")


def test_a_job_failed_between_its_submit_and_the_record_of_it_is_cancelled_upstream(harness, fake):
    submit = harness.driver.submit

    def then_the_sweeper(job):
        ref = submit(job)  # accepted upstream, checked still open: the sweeper fails it now
        TaskEvents(harness.session_factory, None, job.task_id, None).transition(
            status="FAILURE", failReason="timed out: no progress from the upstream for 5 min")
        return ref

    harness.driver.submit = then_the_sweeper  # type: ignore[method-assign]
    task_id = int(harness.post("/submit/imagine", {"prompt": "a fox"})["result"])
    assert harness.executor.execute(task_id) == LOST
    upstream_id = fake.task_for(str(task_id))
    assert fake.wait_for_call(f"/task/{upstream_id}/cancel") and fake.tasks[upstream_id]["status"] == "CANCEL"
    assert harness.fetch(task_id)["status"] == "FAILURE"


def test_a_hook_event_that_arrives_before_the_follower_opens_its_watch_is_not_lost(fake):
    watch = UpstreamWatch(None, UpstreamClient(2.0), 600)
    early = {"id": "1700000000000009", "status": "SUCCESS", "progress": "100%"}
    assert watch.deliver(ACCOUNT, early, keep_early=True) == 0
    assert watch.deliver(ACCOUNT, {**early, "id": "1700000000000010"}) == 0  # a poll answer is not kept
    assert watch.open(ACCOUNT, Endpoint(fake.url), "1700000000000009").next(0) == early
    assert watch.open(ACCOUNT, Endpoint(fake.url), "1700000000000010").next(0) is None
    watch.stop()


def test_describe_sends_the_image_and_the_result_never_overwrites_the_jobs_input(harness, fake, images):
    photo = Image.new("RGB", (90, 60), (30, 90, 200))
    task_id = int(harness.post("/submit/describe", {"base64": data_url(photo)})["result"])
    harness.start(task_id)
    call = fake.wait_for_call("/submit/describe")
    original = images.get(f"{task_id}/images-0.png")
    assert decoded(call.body["base64"]) == original
    prompts = ["a blue card --ar 3:2", "blue --ar 3:2", "plain --ar 3:2", "azure --ar 3:2"]
    fake.update(fake.task_for(str(task_id)), promptEn="1️⃣ a blue card --ar 3:2")
    finish(fake, fake.task_for(str(task_id)), b"upstream copy", buttons=[], name="images-0.png", prompts=prompts,
           finalPrompt="1️⃣ a blue card --ar 3:2")
    harness.threads[0].join(10)
    task = harness.fetch(task_id)
    assert task["imageUrl"] == f"http://mjq.test/mj/image/{task_id}/result-images-0.png"
    assert images.get(f"{task_id}/images-0.png") == original
    assert task["properties"]["prompts"] == prompts
    assert task["prompt"] == task["promptEn"] == "1️⃣ a blue card --ar 3:2"
