"""The S3-compatible image store against a local fake S3 (moto's server on a loopback port)."""
from __future__ import annotations

import io
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from app.images import LocalImageStore, S3ImageStore, make_image_store
from config import Settings
from config.errors import ConfigError
from tests.processes import free_port
from tests.unit.test_executor import FakeClock, submit
from workers.drivers.simulator import SimulatorDriver
from workers.executor import DONE, Executor

BUCKET = "mjq-images"


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def s3_settings(tmp_path, sqlite_url: str, s3_url: str, **extra: str) -> Settings:
    return Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path), sim_job_seconds=0.0,
                             public_url="http://mjq.test", image_store="s3", s3_endpoint_url=s3_url,
                             s3_bucket=BUCKET, s3_access_key_id="test", s3_secret_access_key="test",
                             s3_prefix="run-1/", **extra)


@pytest.fixture
def settings(tmp_path, sqlite_url, s3_url) -> Settings:
    return s3_settings(tmp_path, sqlite_url, s3_url)


@pytest.fixture
def images(settings: Settings) -> S3ImageStore:
    store = make_image_store(settings)
    assert isinstance(store, S3ImageStore)
    return store


def raw_object(s3_url: str, key: str) -> bytes:
    client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_put_stores_the_object_under_the_prefix_and_returns_mjqs_url(images, s3_url):
    url = images.put("42/grid.png", b"\x89PNG-bytes")
    assert url == "http://mjq.test/mj/image/42/grid.png" == images.url("42/grid.png")
    assert raw_object(s3_url, "run-1/42/grid.png") == b"\x89PNG-bytes"
    assert images.get("42/grid.png") == b"\x89PNG-bytes"
    assert images.key_of(url) == "42/grid.png"


def test_a_missing_or_invalid_key_reads_as_none(images):
    assert images.get("42/never-stored.png") is None
    assert images.get("../etc/passwd") is None
    with pytest.raises(ValueError):
        images.put("../escape.png", b"x")


def test_with_a_public_url_image_urls_point_at_the_bucket_directly(tmp_path, sqlite_url, s3_url):
    store = make_image_store(s3_settings(tmp_path, sqlite_url, s3_url, s3_public_url="https://img.example.com"))
    url = store.put("7/a.webp", b"RIFF")
    assert url == "https://img.example.com/run-1/7/a.webp"
    assert store.key_of(url) == "7/a.webp" and store.key_of("http://mjq.test/mj/image/7/a.webp") is None


def test_the_api_serves_images_read_from_s3(client, images):
    images.put("9/fox.png", b"\x89PNG-fox")
    response = client.get("/mj/image/9/fox.png")
    assert (response.status_code, response.data, response.mimetype) == (200, b"\x89PNG-fox", "image/png")
    assert client.get("/mj/image/9/gone.png").status_code == 404


def test_a_simulator_job_stores_its_grid_thumbnail_and_cells_in_s3(client, session_factory, redis, images):
    task_id = submit(client, "a red fox")
    clock = FakeClock()
    driver = SimulatorDriver(images, 0.0, redis, clock=clock, sleep=clock.sleep)
    executor = Executor(session_factory, redis, {"simulator": driver}, "fast@test/1", clock=clock, images=images)
    assert executor.execute(task_id) == DONE
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    for url in [task["imageUrl"], task["properties"]["thumbnailUrl"], task["properties"]["imageUrls"][2]["url"]]:
        assert url.startswith(f"http://mjq.test/mj/image/{task_id}/")
        Image.open(io.BytesIO(client.get(url.removeprefix("http://mjq.test")).data)).verify()


def test_local_is_the_default_store_and_s3_needs_a_bucket(tmp_path, sqlite_url):
    local = Settings.from_env({}, database_url=sqlite_url, data_dir=str(tmp_path))
    assert isinstance(make_image_store(local), LocalImageStore)
    with pytest.raises(ConfigError, match="MJQ_S3_BUCKET"):
        Settings.from_env({"MJQ_IMAGE_STORE": "s3"}, database_url=sqlite_url)


def test_retention_deletes_an_old_tasks_objects_from_the_bucket_and_keeps_the_others(images, s3_url,
                                                                                       session_factory):
    from app.models import Task
    from workers.retention import DAY_MS, apply_retention

    for key in ("11/grid.png", "11/cell-1.png", "11/thumb-grid.webp", "110/grid.png", "12/grid.png"):
        images.put(key, b"\x89PNG")
    now = 10_000 * DAY_MS
    with session_factory() as s:
        for task_id, status in ((11, "SUCCESS"), (110, "NOT_START"), (12, "SUCCESS")):
            s.add(Task(id=task_id, action="IMAGINE", status=status, submit_time=now - 40 * DAY_MS, properties={},
                       buttons=[], mode="FAST", queue="mj.fast", attempt=0, seq=0, updated_at=now))
        s.commit()
    done = apply_retention(session_factory, images, 30, clock=lambda: now)
    assert (done["tasks"], done["images"]) == (2, 4)
    assert images.get("11/grid.png") is None and images.get("12/grid.png") is None
    assert raw_object(s3_url, "run-1/110/grid.png") == b"\x89PNG"  # an open task's folder (and prefix 11…) stays


def test_retention_deletes_the_uploads_of_days_past_it_from_the_bucket(images, s3_url, session_factory):
    from app.images import upload_day
    from workers.retention import DAY_MS, apply_retention

    now = 10_000 * DAY_MS
    old, young = upload_day(now - 31 * DAY_MS), upload_day(now - DAY_MS)
    for key in (f"uploads/{old}/a-0.png", f"uploads/{old}/a-1.png", f"uploads/{young}/b-0.png", "1/grid.png"):
        images.put(key, b"\x89PNG")
    assert apply_retention(session_factory, images, 30, clock=lambda: now)["uploads"] == 2
    assert images.get(f"uploads/{old}/a-0.png") is None and images.get(f"uploads/{old}/a-1.png") is None
    assert raw_object(s3_url, f"run-1/uploads/{young}/b-0.png") == b"\x89PNG"
    assert raw_object(s3_url, "run-1/1/grid.png") == b"\x89PNG"
