"""IMAGINE through real PostgreSQL, Redis and `celery worker` processes."""
from __future__ import annotations

import io
import json
import signal
import time

import pytest
import requests
from PIL import Image

from app.models import Task, now_ms
from tests.processes import gunicorn, wait_for

pytestmark = pytest.mark.integration


def finished(session_factory, task_id: int):
    def check():
        with session_factory() as s:
            task = s.get(Task, task_id)
            return task if task and task.status in ("SUCCESS", "FAILURE") else None
    return check


def test_an_imagine_runs_to_success_on_the_fast_worker(api, workers, session_factory):
    body = api.post("/mj/submit/imagine", json={"prompt": "a red fox --ar 16:9"}).get_json()
    assert body["code"] == 1
    task = wait_for(finished(session_factory, int(body["result"])), 30, "the job to finish")
    assert task.status == "SUCCESS" and task.progress == "100%" and len(task.buttons) == 9
    assert task.claimed_by.startswith("fast@itest/")
    image = api.get("/mj/image/" + task.image_url.split("/mj/image/", 1)[1])
    img = Image.open(io.BytesIO(image.data))
    assert img.format == "PNG" and round(img.width / img.height, 2) == round(16 / 9, 2)
    workers["fast"].wait_for_output(f"task {body['result']} IMAGINE ran on queue mj.fast", timeout=10)


@pytest.mark.parametrize("prefix, node, queue", [("/mj-relax/mj", "normal", "mj.normal"),
                                                  ("/mj-fast/mj", "fast", "mj.fast"),
                                                  ("/mj-turbo/mj", "fast", "mj.fast")])
def test_the_mode_prefix_decides_which_worker_pool_runs_the_job(api, workers, session_factory, prefix, node, queue):
    body = api.post(f"{prefix}/submit/imagine", json={"prompt": "a lighthouse"}).get_json()
    task = wait_for(finished(session_factory, int(body["result"])), 30, "the job to finish")
    assert task.status == "SUCCESS" and task.claimed_by.startswith(f"{node}@itest/")
    workers[node].wait_for_output(f"task {body['result']} IMAGINE ran on queue {queue}", timeout=10)
    other = "fast" if node == "normal" else "normal"
    assert body["result"] not in workers[other].output()


def test_the_job_survives_the_web_process_dying_right_after_the_submit(stack_env, log_dir, workers, session_factory):
    web = gunicorn(stack_env, log_dir)
    base = f"http://127.0.0.1:{stack_env['MJQ_PORT']}"
    body = requests.post(f"{base}/mj/submit/imagine", json={"prompt": "a stubborn fox"}, timeout=10).json()
    web.signal_group(signal.SIGKILL)
    web.stop()
    task = wait_for(finished(session_factory, int(body["result"])), 30, "the job to finish without the web process")
    assert task.status == "SUCCESS"


def test_a_submit_made_while_redis_is_unreachable_runs_once_the_reconciler_sends_it(
        stack_settings, workers, session_factory, redis_client):
    from dataclasses import replace

    from app import create_app
    from workers.celery_app import make_celery
    from workers.dispatch import Dispatcher
    from workers.reconciler import SUBMIT_GRACE_MS, reconcile

    down = replace(stack_settings, redis_url="redis://127.0.0.1:1/0")
    client = create_app(down, celery=make_celery(down)).test_client()
    body = client.post("/mj/submit/imagine", json={"prompt": "written while redis was away"}).get_json()
    assert body["code"] == 1
    task_id = int(body["result"])
    with session_factory() as s:
        assert s.get(Task, task_id).enqueued_at is None
    live = Dispatcher(make_celery(stack_settings))
    sent = reconcile(session_factory, redis_client, live, idle_ms=60_000,
                     clock=lambda: now_ms() + SUBMIT_GRACE_MS + 1)
    assert sent["unsent"] == 1
    assert wait_for(finished(session_factory, task_id), 30, "the reconciled job to finish").status == "SUCCESS"


def test_ready_sees_the_real_database_and_redis(api):
    assert api.get("/ready").get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_the_migrated_postgresql_schema_matches_the_models(stack_settings):
    from tests.unit.test_migrations import schema_drift

    assert schema_drift(stack_settings.effective_database_url) == []


def test_the_reconciler_resends_a_message_redis_dropped_and_leaves_held_ones_alone(
        stack_settings, session_factory, redis_client):
    """kombu on real Redis: one message waits in its list, one is reserved by a consumer (in
    `unacked`), one was dropped (a worker died between popping and reserving it)."""
    import uuid

    from workers.celery_app import make_celery
    from workers.dispatch import Dispatcher
    from workers.reconciler import EPOCH_KEY, reconcile

    redis_client.set(EPOCH_KEY, now_ms())  # Redis kept its data: this is not the wipe path
    queue = f"mj.test-dropped-{uuid.uuid4().hex[:8]}"  # no worker consumes it
    celery = make_celery(stack_settings)
    dispatcher = Dispatcher(celery)
    sent_at = now_ms() - 120_000
    ids = [int(f"9{uuid.uuid4().int % 10**17:017d}") + i for i in range(3)]
    with session_factory() as s:
        for task_id in ids:
            s.add(Task(id=task_id, action="IMAGINE", status="NOT_START", prompt="p", prompt_en="p",
                       submit_time=sent_at, properties={}, buttons=[], mode="FAST", queue=queue,
                       bot_type="MID_JOURNEY", inputs={}, attempt=0, seq=0, updated_at=sent_at, enqueued_at=sent_at))
        s.commit()
    waiting, reserved, dropped = ids
    for task_id in (reserved, waiting):
        assert dispatcher.execute(task_id, "IMAGINE", queue)
    with celery.connection_for_read() as conn:
        consumer = conn.SimpleQueue(queue)
        message = consumer.get(timeout=5)  # reserved, never acknowledged
        assert message.headers["id"] == str(reserved)
        done = reconcile(session_factory, redis_client, dispatcher, idle_ms=60_000)
        assert done["dropped"] == 1
        resent = [json.loads(raw)["headers"]["id"] for raw in redis_client.lrange(queue, 0, -1)]
        assert sorted(resent) == sorted([str(waiting), str(dropped)])
        message.ack()
        consumer.close()
    redis_client.delete(queue)


def test_flower_receives_each_jobs_task_events_from_the_worker(api, workers, stack_settings, session_factory):
    """The worker publishes task events in batches (EVENT_FLUSH_SECONDS): a lone job's still reach a monitor."""
    import threading

    from workers.celery_app import make_celery

    celery = make_celery(stack_settings)
    seen: dict[tuple[str, str], float] = {}

    def record(event: dict) -> None:
        seen.setdefault((event.get("uuid") or event.get("hostname", ""), event["type"]), time.time() * 1000)

    with celery.connection_for_read() as conn:
        receiver = celery.events.Receiver(conn, handlers={"*": record})
        listener = threading.Thread(target=receiver.capture, kwargs={"limit": None}, daemon=True)
        listener.start()
        try:
            # A worker's heartbeat (every 2 s) shows the receiver is subscribed before the job is submitted.
            wait_for(lambda: any(kind == "worker-heartbeat" for _, kind in seen), 10, "a worker heartbeat")
            body = api.post("/mj/submit/imagine", json={"prompt": "a heron in the reeds"}).get_json()
            task = wait_for(finished(session_factory, int(body["result"])), 30, "the job to finish")
            wait_for(lambda: (body["result"], "task-succeeded") in seen, 5, "Flower's task-succeeded event")
        finally:
            receiver.should_stop = True
            listener.join(5)
            celery.close()
    kinds = {kind for (uuid, kind) in seen if uuid == body["result"]}
    assert {"task-received", "task-started", "task-succeeded"} <= kinds
    assert seen[(body["result"], "task-succeeded")] - task.finish_time < 2000
