"""POST /mj/submit/imagine as clients send it."""
from __future__ import annotations

import base64
import io
import json
import secrets

import pytest
from PIL import Image
from sqlalchemy import func, select

from app.models import Task
from tests.imaging import data_url
from tests.unit.conftest import drain
from workers import queues


def png_data_url(size=(8, 8)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def count_tasks(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(Task))


def test_imagine_is_accepted_with_code_1_and_a_numeric_string_id(client, celery, session_factory):
    resp = client.post("/mj/submit/imagine", json={"prompt": "a red fox --ar 16:9"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["code"] == 1 and body["description"]
    assert isinstance(body["result"], str) and body["result"].isdigit() and len(body["result"]) >= 16
    assert body["properties"]["discordInstanceId"].startswith("sim-")
    with session_factory() as s:
        task = s.get(Task, int(body["result"]))
        assert (task.status, task.action, task.mode, task.queue) == ("NOT_START", "IMAGINE", "FAST", queues.FAST)
        assert task.description == "/imagine a red fox --ar 16:9" and task.enqueued_at is not None
    [msg] = drain(celery, queues.FAST)
    assert msg == {"task": "mj.execute", "args": [body["result"], "IMAGINE"], "id": body["result"]}


def test_the_job_message_shows_flower_its_arguments_as_celery_writes_them(client, celery):
    from celery.utils.saferepr import saferepr

    task_id = client.post("/mj/submit/imagine", json={"prompt": "a red fox"}).get_json()["result"]
    with celery.connection_for_write() as conn:
        queue = conn.SimpleQueue(queues.FAST)
        msg = queue.get(timeout=1)
        msg.ack()
        queue.close()
    assert msg.headers["argsrepr"] == saferepr([task_id, "IMAGINE"]) == f"['{task_id}', 'IMAGINE']"
    assert msg.headers["kwargsrepr"] == saferepr({}) == "{}"


def test_answers_are_compact_json_that_relays_can_match_by_text(client):
    raw = client.post("/mj/submit/imagine", json={"prompt": "cat"}).get_data(as_text=True)
    assert raw.startswith('{"code":1,"description":') and ": " not in raw and ", " not in raw


@pytest.mark.parametrize("path, mode, queue", [
    ("/mj-relax/mj/submit/imagine", "RELAX", queues.NORMAL),
    ("/mj-fast/mj/submit/imagine", "FAST", queues.FAST),
    ("/mj-turbo/mj/submit/imagine", "TURBO", queues.FAST),
])
def test_the_mode_prefix_picks_the_mode_and_queue(client, celery, session_factory, path, mode, queue):
    body = client.post(path, json={"prompt": "cat"}).get_json()
    with session_factory() as s:
        task = s.get(Task, int(body["result"]))
        assert (task.mode, task.queue) == (mode, queue)
    assert [m["args"][0] for m in drain(celery, queue)] == [body["result"]]


def test_a_relax_flag_in_the_prompt_sends_the_job_to_the_normal_queue(client, celery):
    body = client.post("/mj/submit/imagine", json={"prompt": "cat --relax"}).get_json()
    assert [m["args"][0] for m in drain(celery, queues.NORMAL)] == [body["result"]]
    assert drain(celery, queues.FAST) == []


def test_state_is_echoed_byte_for_byte(client):
    state = '  {"user": 42, "note": "猫猫 ✨"}  '
    body = client.post("/mj/submit/imagine", json={"prompt": "cat", "state": state}).get_json()
    task = client.get(f"/mj/task/{body['result']}/fetch").get_json()
    assert task["state"] == state


def test_unknown_fields_are_ignored(client):
    body = client.post("/mj/submit/imagine", json={"prompt": "cat", "chooseSameChannel": True, "x": [1]}).get_json()
    assert body["code"] == 1


def test_pad_images_are_stored_and_recorded(client, session_factory, images):
    body = client.post("/mj/submit/imagine", json={"prompt": "cat", "base64Array": [png_data_url()]}).get_json()
    with session_factory() as s:
        keys = s.get(Task, int(body["result"])).inputs["images"]
    assert len(keys) == 1 and images.get(keys[0]).startswith(b"\x89PNG")


@pytest.mark.parametrize("payload, field", [
    ({}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 12}, "prompt"),
    ({"prompt": "x" * 4001}, "prompt"),
    ({"prompt": "cat", "base64Array": ["aGVsbG8="]}, "base64Array[0]"),
    ({"prompt": "cat", "base64Array": ["data:image/png;base64,%%%"]}, "base64Array[0]"),
    ({"prompt": "cat", "base64Array": ["data:image/png;base64," + base64.b64encode(b"GIF89a....").decode()]},
     "base64Array[0]"),
    ({"prompt": "cat", "base64Array": ["data:text/plain;base64,aGk="]}, "base64Array[0]"),
    ({"prompt": "cat", "base64Array": "data:image/png;base64,xx"}, "base64Array"),
    ({"prompt": "cat", "base64": "not a data url"}, "base64Array[0]"),
    ({"prompt": "cat", "botType": "DALL_E"}, "botType"),
    ({"prompt": "cat", "notifyHook": "ftp://example.com/x"}, "notifyHook"),
    ({"prompt": "cat", "state": {"a": 1}}, "state"),
    ({"prompt": "cat", "accountFilter": {"modes": ["SLOW"]}}, "accountFilter.modes"),
])
def test_bad_input_gets_code_4_naming_the_field_and_writes_nothing(client, celery, session_factory, images,
                                                                    payload, field):
    resp = client.post("/mj/submit/imagine", json=payload)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["code"] == 4 and field in body["description"] and body["result"] is None
    assert count_tasks(session_factory) == 0
    assert drain(celery, queues.FAST) == []
    assert not images.root.exists() or not any(images.root.iterdir())


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1,2]", b'"prompt"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_http_400_with_code_4(client, session_factory, raw):
    resp = client.post("/mj/submit/imagine", data=raw, content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["code"] == 4
    assert count_tasks(session_factory) == 0


def test_an_oversized_body_is_refused_with_413(client, settings, session_factory):
    resp = client.post("/mj/submit/imagine", data=b"x" * (settings.max_body_bytes + 1))
    assert resp.status_code == 413 and resp.get_json()["code"] == 4
    assert count_tasks(session_factory) == 0


def test_no_account_for_the_mode_is_code_3(client, session_factory):
    from app.models import Account

    with session_factory() as s:
        for account in s.scalars(select(Account)):
            account.modes = ["FAST"]
        s.commit()
    body = client.post("/mj-relax/mj/submit/imagine", json={"prompt": "cat"}).get_json()
    assert body["code"] == 3 and "RELAX" in body["description"]
    assert count_tasks(session_factory) == 0


def test_account_filter_instance_id_pins_the_account(client, session_factory):
    body = client.post("/mj/submit/imagine", json={"prompt": "cat", "accountFilter": {"instanceId": "sim-2"}}
                       ).get_json()
    assert body["properties"]["discordInstanceId"] == "sim-2"
    body = client.post("/mj/submit/imagine", json={"prompt": "cat", "accountFilter": {"instanceId": "nope"}}
                       ).get_json()
    assert body["code"] == 3


def test_a_submit_while_the_broker_is_down_is_still_accepted_and_left_for_the_reconciler(
        settings, redis, accounts, session_factory):
    from app import create_app
    from workers.celery_app import make_celery

    dead = make_celery(settings, broker_url="redis://127.0.0.1:1/0")
    client = create_app(settings, celery=dead, redis=redis).test_client()
    body = client.post("/mj/submit/imagine", json={"prompt": "cat"}).get_json()
    assert body["code"] == 1
    with session_factory() as s:
        task = s.get(Task, int(body["result"]))
        assert task.status == "NOT_START" and task.enqueued_at is None


class TestAuth:
    @pytest.fixture
    def settings(self, settings):
        from dataclasses import replace

        return replace(settings, api_secret="S3cret")

    def test_without_the_secret_the_answer_is_401(self, client):
        assert client.post("/mj/submit/imagine", json={"prompt": "cat"}).status_code == 401
        assert client.get("/mj/task/list").status_code == 401
        assert client.post("/mj/submit/imagine", json={"prompt": "cat"},
                           headers={"mj-api-secret": "S3cre"}).status_code == 401

    def test_the_header_and_a_bearer_token_both_work(self, client):
        for headers in ({"mj-api-secret": "S3cret"}, {"Authorization": "Bearer S3cret"}):
            assert client.post("/mj-relax/mj/submit/imagine", json={"prompt": "cat"}, headers=headers
                               ).get_json()["code"] == 1

    def test_health_ready_and_images_need_no_secret(self, client, images):
        images.put("1/x.png", b"\x89PNG\r\n\x1a\nxx")
        assert client.get("/health").status_code == 200
        resp = client.get("/mj/image/1/x.png")
        assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"


def test_the_images_endpoint_refuses_path_tricks(client):
    for path in ("/mj/image/../mjq.sqlite3", "/mj/image/%2e%2e/mjq.sqlite3", "/mj/image/a/../../x.png"):
        assert client.get(path).status_code == 404


def test_json_bodies_keep_unicode_as_text(client):
    body = client.post("/mj/submit/imagine", json={"prompt": "猫猫 cat"})
    task = client.get(f"/mj/task/{body.get_json()['result']}/fetch")
    assert "猫猫" in task.get_data(as_text=True)
    assert json.loads(task.get_data())["prompt"] == "猫猫 cat"


def test_an_image_over_the_size_cap_is_refused_naming_the_field(settings, celery, redis, accounts, session_factory):
    from dataclasses import replace

    from app import create_app

    small = replace(settings, max_image_bytes=2048)
    client = create_app(small, celery=celery, redis=redis).test_client()
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), secrets.token_bytes(64 * 64 * 3)).save(buf, "PNG")
    assert len(buf.getvalue()) > 2048
    big = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    for path, body, field in (("/mj/submit/imagine", {"prompt": "cat", "base64Array": [big]}, "base64Array[0]"),
                              ("/mj/submit/describe", {"base64": big}, "base64"),
                              ("/mj/submit/blend", {"base64Array": [big, big]}, "base64Array[0]")):
        reply = client.post(path, json=body).get_json()
        assert reply["code"] == 4 and field in reply["description"] and "2048 bytes" in reply["description"]
    assert count_tasks(session_factory) == 0


def test_more_images_than_the_cap_are_refused(client):
    reply = client.post("/mj/submit/imagine", json={"prompt": "cat", "base64Array": [png_data_url()] * 6}).get_json()
    assert reply["code"] == 4 and "base64Array" in reply["description"]


@pytest.mark.parametrize("encode, ext, magic", [
    (lambda image: data_url(image, "WEBP"), "webp", b"RIFF"), (lambda image: data_url(image, "GIF"), "gif", b"GIF8")])
def test_webp_and_gif_pad_images_are_accepted_by_their_magic_bytes(client, session_factory, images, encode, ext,
                                                                     magic):
    body = client.post("/mj/submit/imagine", json={"prompt": "cat", "base64Array": [encode(Image.new("RGB", (8, 8)))]}
                       ).get_json()
    assert body["code"] == 1
    with session_factory() as s:
        [key] = s.get(Task, int(body["result"])).inputs["images"]
    assert key.endswith(f".{ext}") and images.get(key).startswith(magic)


@pytest.mark.parametrize("raw", [
    b'{"prompt": "a fox\\u0000"}',
    b'{"prompt": "a fox", "state": "\\u0000"}',
    b'{"prompt": "a fox", "\\u0000unknown": ["x"]}',
    b'{"prompt": "a fox", "extra": {"nested": ["\\u0000"]}}',
])
def test_a_nul_character_anywhere_in_the_body_is_http_400_with_code_4_and_writes_nothing(
        client, celery, session_factory, raw):
    # PostgreSQL text and JSON cannot hold U+0000: stored, it was an HTTP 500 (found by schemathesis on PostgreSQL).
    resp = client.post("/mj/submit/imagine", data=raw, content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["code"] == 4 and "NUL" in resp.get_json()["description"]
    assert count_tasks(session_factory) == 0 and drain(celery, queues.FAST) == []


def test_an_escaped_backslash_before_u0000_is_ordinary_text(client, session_factory):
    resp = client.post("/mj/submit/imagine", data=b'{"prompt": "a fox \\\\u0000"}', content_type="application/json")
    assert resp.get_json()["code"] == 1
    with session_factory() as s:
        assert s.scalar(select(Task.prompt)) == "a fox \\u0000"


def test_a_nul_in_the_query_or_a_form_is_http_400_with_code_4(client):
    resp = client.get("/mj/task/list?status=%00")
    assert resp.status_code == 400 and resp.get_json()["code"] == 4
    resp = client.post("/admin/login", data="key=a%00b", content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 400


def test_a_submit_whose_process_dies_between_its_commit_and_its_send_is_sent_by_the_reconciler(
        client, celery, redis, session_factory, monkeypatch):
    from app.models import now_ms
    from app.services.submit import Submitter
    from workers.dispatch import Dispatcher
    from workers.reconciler import EPOCH_KEY, reconcile

    monkeypatch.setattr(Submitter, "enqueue", lambda self, task: False)  # the row is committed, then nothing
    task_id = int(client.post("/mj/submit/imagine", json={"prompt": "cat"}).get_json()["result"])
    assert drain(celery, queues.FAST) == []
    redis.set(EPOCH_KEY, "1")
    # Recorded as sent with the row (one write per submit), so the "dropped" rule finds it after its window.
    assert reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000)["dropped"] == 0
    later = now_ms() + 61_000
    sent = reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: later)
    assert sent["dropped"] == 1 and [m["args"] for m in drain(celery, queues.FAST)] == [[str(task_id), "IMAGINE"]]
