"""Image URL modes: the path a client calls picks the form of every image URL it is shown."""
from __future__ import annotations

import pytest

from app.api import path_image_mode, path_mode
from app.models import Task
from config import Settings

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


def fetch(client, prefix: str, task_id: int) -> dict:
    return client.get(f"{prefix}/task/{task_id}/fetch").get_json()


def listed(client, prefix: str, task_id: int) -> dict:
    [task] = client.post(f"{prefix}/task/list-by-condition", json={"ids": [str(task_id)]}).get_json()
    return task


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
