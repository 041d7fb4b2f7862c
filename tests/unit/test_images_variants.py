"""Thumbnails and grid cells: stored beside every final image and named in the task's properties."""
from __future__ import annotations

import io

from PIL import Image

from app.image_variants import store_variants
from tests.unit.test_executor import FakeClock, submit
from workers.drivers.simulator import SimulatorDriver
from workers.executor import DONE, Executor


def run(session_factory, redis, images, task_id: int) -> str:
    clock = FakeClock()
    driver = SimulatorDriver(images, 0.0, redis, clock=clock, sleep=clock.sleep)
    executor = Executor(session_factory, redis, {"simulator": driver}, "fast@test/1", clock=clock, images=images)
    return executor.execute(task_id)


def served(client, url: str) -> Image.Image:
    response = client.get(url.replace("http://mjq.test", ""))
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.data))


def test_an_imagine_gets_a_webp_thumbnail_and_its_four_cells_decodable_from_their_urls(client, session_factory,
                                                                                         redis, images):
    task_id = submit(client, "a red fox --ar 16:9")
    assert run(session_factory, redis, images, task_id) == DONE
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    grid = served(client, task["imageUrl"])
    thumb = served(client, task["properties"]["thumbnailUrl"])
    assert thumb.format == "WEBP" and max(thumb.size) == 256
    assert abs(thumb.width / thumb.height - grid.width / grid.height) < 0.02
    cells = task["properties"]["imageUrls"]
    assert [c["url"].rsplit("/", 1)[1] for c in cells] == ["cell-1.png", "cell-2.png", "cell-3.png", "cell-4.png"]
    first = served(client, cells[0]["url"])
    assert first.format == "PNG" and first.size == (grid.width // 2, grid.height // 2)
    # Cell 4 is the grid's bottom-right quarter, pixel for pixel.
    assert served(client, cells[3]["url"]).tobytes() == grid.convert(first.mode).crop(
        (grid.width // 2, grid.height // 2, grid.width // 2 * 2, grid.height // 2 * 2)).tobytes()
    assert all(max(served(client, c["thumbnail"]).size) == 256 for c in cells)


def test_an_upscale_gets_a_thumbnail_and_no_cells(client, session_factory, redis, images):
    parent = submit(client, "a red fox")
    run(session_factory, redis, images, parent)
    answer = client.post("/mj/submit/change", json={"taskId": str(parent), "action": "UPSCALE", "index": 2})
    task_id = int(answer.get_json()["result"])
    assert run(session_factory, redis, images, task_id) == DONE
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    assert task["action"] == "UPSCALE" and "imageUrls" not in task["properties"]
    assert served(client, task["properties"]["thumbnailUrl"]).format == "WEBP"


def test_an_image_from_elsewhere_or_undecodable_gets_no_variants_and_no_error(images):
    assert store_variants(images, 1, "IMAGINE", "https://elsewhere.example/x.png") == {}
    url = images.put("7/broken.png", b"not an image")
    assert store_variants(images, 7, "IMAGINE", url) == {}
    assert store_variants(images, 7, "IMAGINE", None) == {}


def test_cells_are_made_on_their_first_request_with_the_bytes_a_store_without_mjq_urls_gets_at_once(
        client, session_factory, redis, images, tmp_path):
    """mjq serves the local store's URLs, so a grid's cells cost nothing until someone asks for one; a store
    whose URLs point elsewhere (a public bucket) gets them when the job ends, the same bytes."""
    from app.image_variants import grid_cell
    from app.images import LocalImageStore
    from workers.drivers import sim_images

    task_id = submit(client, "a red fox --ar 3:2")
    assert run(session_factory, redis, images, task_id) == DONE
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    cell_keys = [images.key_of(c[kind]) for c in task["properties"]["imageUrls"] for kind in ("url", "thumbnail")]
    assert [images.get(k) for k in cell_keys] == [None] * 8  # named, not made
    served(client, task["properties"]["imageUrls"][2]["thumbnail"])
    lazily = [images.get(k) for k in cell_keys]
    assert None not in lazily  # the first request made all eight

    grid = Image.open(io.BytesIO(images.get(images.key_of(task["imageUrl"]))))
    elsewhere = LocalImageStore(tmp_path / "bucket", "http://mjq.test")
    elsewhere.served_by_mjq = False
    url = elsewhere.put(f"{task_id}/grid.png", sim_images.to_png(grid))
    eager = store_variants(elsewhere, task_id, "IMAGINE", url, image=grid)
    assert [elsewhere.get(elsewhere.key_of(c[kind])) for c in eager["imageUrls"] for kind in ("url", "thumbnail")
            ] == lazily
    assert Image.open(io.BytesIO(lazily[2])).size == (grid.width // 2, grid.height // 2)
    # Keys that name no cell of a grid are not made.
    assert grid_cell(images, task_id, f"{task_id}/cell-5.png", "IMAGINE", task["imageUrl"]) is None
    assert grid_cell(images, task_id, f"{task_id}/cell-1.png", "UPSCALE", task["imageUrl"]) is None
    assert client.get(f"/mj/image/{task_id + 1}/cell-1.png").status_code == 404
    assert client.get(f"/mj/image/{'9' * 30}/cell-1.png").status_code == 404  # no id that large: no lookup
