"""Structured logs: JSON lines carry the request id of a web request and the task id of a job."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.models import now_ms
from tests.unit.test_executor import FakeClock
from workers.drivers.simulator import SimulatorDriver
from workers.logs import log_context, make_handler
from workers.runtime import Runtime, set_runtime


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Every record of the process, as the JSON handler of MJQ_LOG_FORMAT=json writes it."""
    stream = io.StringIO()
    handler = make_handler(stream, "json")
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_request_s_log_lines_carry_the_request_id_it_sent_and_the_response_returns_it(client, json_lines):
    response = client.get("/mj/task/list", headers={"X-Request-Id": "req-42.a"})
    assert response.headers["X-Request-Id"] == "req-42.a"
    mine = [line for line in lines_of(json_lines) if line.get("request_id") == "req-42.a"]
    [access] = [line["message"] for line in mine if line["logger"] == "mjq.requests"]
    assert access.startswith("GET /mj/task/list 200 ") and access.endswith(" ms")
    assert all({"ts", "level", "logger", "message", "role"} <= set(line) for line in mine)
    assert lines_of(json_lines)[-1]["ts"].endswith("+00:00")


def test_a_request_without_a_usable_id_gets_a_new_one_per_request(client, json_lines):
    first = client.get("/health", headers={"X-Request-Id": "bad id {\"forged\": 1}"}).headers["X-Request-Id"]
    second = client.get("/health").headers["X-Request-Id"]
    assert first != second and len(first) == len(second) == 32 and "forged" not in first
    ids = {line.get("request_id") for line in lines_of(json_lines) if line["logger"] == "mjq.requests"}
    assert ids == {first, second}


def test_every_log_line_of_a_job_carries_its_task_id_and_none_after_it(client, settings, session_factory, redis,
                                                                       images, json_lines):
    from workers.tasks.execute import execute

    task_id = client.post("/mj/submit/imagine", json={"prompt": "a logged fox"}).get_json()["result"]
    clock = FakeClock(now_ms())
    driver = SimulatorDriver(images, 0.0, redis, clock=clock, sleep=clock.sleep)
    set_runtime(Runtime(settings, session_factory, redis, images, {"simulator": driver}))
    try:
        assert execute(task_id, "IMAGINE") == "done"
    finally:
        set_runtime(None)
    logging.getLogger("after").info("after the job")
    lines = lines_of(json_lines)
    job = [line for line in lines if line["logger"] in ("workers.executor", "workers.tasks.execute")]
    assert len(job) == 2 and all(line["task_id"] == task_id for line in job)
    assert "task_id" not in lines[-1] and lines[-1]["message"] == "after the job"


def test_log_context_nests_and_the_text_format_shows_the_ids_too(json_lines):
    stream = io.StringIO()
    logger = logging.getLogger("mjq.test")
    logger.addHandler(text := make_handler(stream, "text"))
    try:
        with log_context(task_id=7), log_context(delivery_id=9):
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(text)
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("mjq.test: task_id=7 delivery_id=9 inside")
    assert outside.endswith("mjq.test: outside")
