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


def test_cells_cut_from_the_drivers_decoded_image_match_those_read_back_from_the_store(images):
    """A driver that holds the picture hands it over; one that does not gets the same files from the store."""
    from workers.drivers import sim_images

    grid = sim_images.render_grid("a red fox --ar 3:2", 7)
    url = images.put("9/grid.png", sim_images.to_png(grid))
    handed = store_variants(images, 9, "IMAGINE", url, image=grid)
    handed_cells = [images.get(images.key_of(c["url"])) for c in handed["imageUrls"]]
    read_back = store_variants(images, 9, "IMAGINE", url)
    assert read_back == handed
    assert [images.get(images.key_of(c["url"])) for c in read_back["imageUrls"]] == handed_cells
    assert Image.open(io.BytesIO(handed_cells[1])).size == (grid.width // 2, grid.height // 2)
