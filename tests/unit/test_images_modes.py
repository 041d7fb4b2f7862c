"""Image URL modes: the path a client calls, else its API key, picks the form of every image URL it is
shown; a task's webhooks carry the form it was submitted with."""
from __future__ import annotations

import json

import pytest

from app.api import path_image_mode, path_mode
from app.models import Task
from config import Settings
from tests.fakes.webhooks import deliveries
from workers.webhook_outbox import WebhookOutbox

CDN = "https://cdn.example.com"
ORIGIN = "https://upstream.example.net/attachments/1/fox.png"


@pytest.fixture
def settings(tmp_path, sqlite_url) -> Settings:
    return Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path), sim_job_seconds=0.0,
                             public_url="http://mjq.test", image_proxy_url=CDN)


@pytest.fixture
def task_id(client, session_factory, images) -> int:
    """A finished imagine whose image was copied from an upstream, with a thumbnail and four cells."""
    task_id = int(client.post("/mj/submit/imagine", json={"prompt": "a red fox"}).get_json()["result"])
    with session_factory() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.status, task.progress = "SUCCESS", "100%"
        task.image_url = images.url(f"{task_id}/grid.png")
        task.properties = {**(task.properties or {}), "originImageUrl": ORIGIN,
                           "thumbnailUrl": images.url(f"{task_id}/thumb-grid.webp"),
                           "imageUrls": [{"url": images.url(f"{task_id}/cell-{n}.png"),
                                          "thumbnail": images.url(f"{task_id}/thumb-cell-{n}.webp")}
                                         for n in range(1, 5)]}
        session.commit()
    return task_id


def fetch(client, prefix: str, task_id: int, headers=None) -> dict:
    return client.get(f"{prefix}/task/{task_id}/fetch", headers=headers).get_json()


def listed(client, prefix: str, task_id: int, headers=None) -> dict:
    [task] = client.post(f"{prefix}/task/list-by-condition", json={"ids": [str(task_id)]}, headers=headers
                         ).get_json()
    return task


def owner_key(client, session_factory, task_id: int, image_mode: str | None) -> tuple[dict, str]:
    """A user key made with `image_mode` (None: not given) that owns task `task_id`: (its headers, its id).

    Open mode (no MJQ_API_SECRET): anyone may create keys, and a presented key is still honoured."""
    body = {"name": "images", "role": "user"} | ({} if image_mode is None else {"imageMode": image_mode})
    answer = client.post("/mj/admin/keys", json=body).get_json()
    assert answer["code"] == 1, answer
    with session_factory() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.owner = answer["result"]["id"]
        session.commit()
    return {"Authorization": f"Bearer {answer['result']['key']}"}, answer["result"]["id"]


def shown_as(task_id: int) -> dict[str, str]:
    """The imageUrl each mode shows for the `task_id` fixture's task."""
    return {"relay": f"http://mjq.test/mj/image/{task_id}/grid.png", "origin": ORIGIN,
            "proxy": f"{CDN}/mj/image/{task_id}/grid.png"}


@pytest.mark.parametrize("read", [fetch, listed])
@pytest.mark.parametrize("prefix", ["/mj", "/mj-relay/mj", "/mj-fast/mj", "/mj-relax-relay/mj"])
def test_relay_paths_show_urls_served_by_mjq(client, task_id, read, prefix):
    task = read(client, prefix, task_id)
    assert task["imageUrl"] == f"http://mjq.test/mj/image/{task_id}/grid.png"
    assert task["properties"]["thumbnailUrl"] == f"http://mjq.test/mj/image/{task_id}/thumb-grid.webp"
    assert task["properties"]["imageUrls"][3] == {"url": f"http://mjq.test/mj/image/{task_id}/cell-4.png",
                                                  "thumbnail": f"http://mjq.test/mj/image/{task_id}/thumb-cell-4.webp"}


@pytest.mark.parametrize("read", [fetch, listed])
@pytest.mark.parametrize("prefix", ["/mj-origin/mj", "/mj-fast-origin/mj", "/mj-turbo-origin/mj"])
def test_origin_paths_show_the_upstreams_own_url_of_the_final_image(client, task_id, read, prefix):
    task = read(client, prefix, task_id)
    assert task["imageUrl"] == ORIGIN
    # Thumbnails and cells exist only in mjq's store: they stay relay URLs.
    assert task["properties"]["thumbnailUrl"] == f"http://mjq.test/mj/image/{task_id}/thumb-grid.webp"


@pytest.mark.parametrize("read", [fetch, listed])
@pytest.mark.parametrize("prefix", ["/mj-proxy/mj", "/mj-relax-proxy/mj", "/mj-turbo-proxy/mj"])
def test_proxy_paths_show_urls_on_the_cdn_prefix(client, task_id, read, prefix):
    task = read(client, prefix, task_id)
    assert task["imageUrl"] == f"{CDN}/mj/image/{task_id}/grid.png"
    assert task["properties"]["thumbnailUrl"] == f"{CDN}/mj/image/{task_id}/thumb-grid.webp"
    assert [c["url"] for c in task["properties"]["imageUrls"]] == [
        f"{CDN}/mj/image/{task_id}/cell-{n}.png" for n in range(1, 5)]


def test_the_image_mode_is_applied_when_shown_and_never_stored(client, task_id, session_factory, images):
    fetch(client, "/mj-proxy/mj", task_id)
    fetch(client, "/mj-origin/mj", task_id)
    with session_factory() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.image_url == images.url(f"{task_id}/grid.png")


def test_a_task_without_an_upstream_url_keeps_its_relay_url_under_origin(client, session_factory, images):
    task_id = int(client.post("/mj/submit/imagine", json={"prompt": "a fox"}).get_json()["result"])
    with session_factory() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.image_url = images.url(f"{task_id}/sim.png")
        session.commit()
    assert fetch(client, "/mj-origin/mj", task_id)["imageUrl"] == f"http://mjq.test/mj/image/{task_id}/sim.png"


def test_list_and_queue_follow_the_image_mode_of_their_path(client, task_id):
    [task] = [t for t in client.get("/mj-proxy/mj/task/list").get_json() if t["id"] == str(task_id)]
    assert task["imageUrl"] == f"{CDN}/mj/image/{task_id}/grid.png"


def test_image_mode_paths_keep_the_job_mode_of_their_prefix(app, client, session_factory):
    answer = client.post("/mj-turbo-origin/mj/submit/imagine", json={"prompt": "a cat"}).get_json()
    with session_factory() as session:
        task = session.get(Task, int(answer["result"]))
        assert task is not None and task.mode == "TURBO"
    with app.test_request_context("/mj-relax-origin/mj/task/list"):
        assert (path_mode(), path_image_mode()) == ("RELAX", "origin")
    with app.test_request_context("/mj-proxy/mj/task/list"):
        assert (path_mode(), path_image_mode()) == (None, "proxy")
    with app.test_request_context("/mj-fast/mj/task/list"):
        assert (path_mode(), path_image_mode()) == ("FAST", "relay")


@pytest.mark.parametrize("read", [fetch, listed])
@pytest.mark.parametrize("image_mode", ["origin", "relay", "proxy", None])
def test_a_keys_image_mode_picks_the_form_it_is_shown_on_the_plain_mounts(client, session_factory, task_id, read,
                                                                         image_mode):
    headers, _key_id = owner_key(client, session_factory, task_id, image_mode)
    for prefix in ("/mj", "/mj-fast/mj"):
        assert read(client, prefix, task_id, headers)["imageUrl"] == shown_as(task_id)[image_mode or "relay"]


@pytest.mark.parametrize("key_mode, prefix, shown", [
    ("proxy", "/mj-relay/mj", "relay"), ("proxy", "/mj-origin/mj", "origin"), ("origin", "/mj-relax-proxy/mj", "proxy"),
    ("relay", "/mj-turbo-origin/mj", "origin"),
])
def test_a_path_that_names_an_image_mode_overrides_the_keys(client, session_factory, task_id, key_mode, prefix, shown):
    headers, _key_id = owner_key(client, session_factory, task_id, key_mode)
    assert fetch(client, prefix, task_id, headers)["imageUrl"] == shown_as(task_id)[shown]


def test_an_admin_changes_a_keys_image_mode_and_its_next_answer_follows(client, session_factory, task_id):
    headers, key_id = owner_key(client, session_factory, task_id, "relay")
    changed = client.patch(f"/mj/admin/keys/{key_id}", json={"imageMode": "proxy"}).get_json()
    assert changed["code"] == 1 and changed["result"]["imageMode"] == "proxy"
    assert fetch(client, "/mj", task_id, headers)["imageUrl"] == shown_as(task_id)["proxy"]
    [key] = client.get("/mj/admin/keys").get_json()["result"]
    assert key["imageMode"] == "proxy" and "webhookSecret" not in key


def test_a_user_key_cannot_change_its_own_image_mode(client, session_factory, task_id):
    headers, key_id = owner_key(client, session_factory, task_id, "relay")
    answer = client.patch(f"/mj/admin/keys/{key_id}", json={"imageMode": "proxy"}, headers=headers)
    assert answer.status_code == 403
    assert fetch(client, "/mj", task_id, headers)["imageUrl"] == shown_as(task_id)["relay"]


@pytest.mark.parametrize("method, path, body, words", [
    ("post", "/mj/admin/keys", {"name": "k", "imageMode": "cdn"}, "imageMode must be one of relay, origin, proxy"),
    ("post", "/mj/admin/keys", {"name": "k", "imageMode": 3}, "imageMode must be a string"),
    ("patch", "/mj/admin/keys/{id}", {"imageMode": "RELAY"}, "imageMode must be one of"),
    ("patch", "/mj/admin/keys/{id}", {"plan": "premium"}, "plan cannot be changed"),
])
def test_a_bad_image_mode_or_an_unchangeable_field_is_refused_naming_it(client, method, path, body, words):
    key = client.post("/mj/admin/keys", json={"name": "k"}).get_json()["result"]
    answer = client.open(path.format(id=key["id"]), method=method.upper(), json=body).get_json()
    assert answer["code"] == 4 and words in answer["description"]
    assert client.get("/mj/admin/keys").get_json()["result"][0]["imageMode"] == "relay"


def test_changing_an_unknown_key_answers_code_3(client):
    assert client.patch("/mj/admin/keys/nope", json={"imageMode": "proxy"}).get_json()["code"] == 3


def test_mjq_keys_create_and_update_set_the_image_mode(monkeypatch, capsys, settings, session_factory):
    from app.cli import main
    from app.models_tenancy import ApiKey

    monkeypatch.setenv("DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("MJQ_DATA_DIR", settings.data_dir)
    assert main(["keys", "create", "--name", "cdn", "--image-mode", "proxy"]) == 0
    key_id = capsys.readouterr().out.split()[1]
    with session_factory() as session:
        assert session.get(ApiKey, key_id).image_mode == "proxy"
    assert main(["keys", "update", key_id, "--image-mode", "origin"]) == 0
    with session_factory() as session:
        assert session.get(ApiKey, key_id).image_mode == "origin"
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "bad", "--image-mode", "cdn"])


@pytest.mark.parametrize("image_mode, prefix", [(None, "/mj"), ("relay", "/mj-relay/mj"), ("origin", "/mj-origin/mj"),
                                                ("proxy", "/mj-proxy/mj")])
def test_a_webhook_body_shows_the_image_form_of_the_mode_the_task_was_submitted_with(
        client, session_factory, images, task_id, image_mode, prefix):
    with session_factory() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.image_mode, task.notify_hook = image_mode, "https://hooks.example.com/h"
        WebhookOutbox(images=images, image_proxy_url=CDN).write_in_transaction(session, task, task.to_json(), 1)
        session.commit()
    [row] = deliveries(session_factory, task_id)
    assert row.body.encode() == client.get(f"{prefix}/task/{task_id}/fetch").data
    assert json.loads(row.body)["imageUrl"] == shown_as(task_id)[image_mode or "relay"]


@pytest.mark.parametrize("prefix, recorded", [("/mj-proxy/mj", "proxy"), ("/mj-relax-origin/mj", "origin"),
                                              ("/mj-relay/mj", "relay"), ("/mj", "relay")])
def test_a_submit_records_the_image_mode_of_its_mount_for_the_tasks_webhooks(client, session_factory, prefix,
                                                                               recorded):
    task_id = int(client.post(f"{prefix}/submit/imagine", json={"prompt": "a fox"}).get_json()["result"])
    with session_factory() as session:
        assert session.get(Task, task_id).image_mode == recorded


def test_a_proxy_mode_keys_submit_on_the_plain_mount_records_proxy(client, session_factory):
    key = client.post("/mj/admin/keys", json={"name": "cdn", "role": "user", "imageMode": "proxy"}).get_json()
    headers = {"mj-api-secret": key["result"]["key"]}
    task_id = int(client.post("/mj/submit/imagine", json={"prompt": "a fox"}, headers=headers).get_json()["result"])
    with session_factory() as session:
        assert session.get(Task, task_id).image_mode == "proxy"
