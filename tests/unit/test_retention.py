"""Retention deletes old finished tasks with their images and webhook history, and nothing else."""
from __future__ import annotations

from app.models import Task, WebhookDelivery
from tests.unit.test_executor import make_executor
from workers.retention import DAY_MS, apply_retention
from workers.webhook_outbox import WebhookOutbox


def test_old_finished_tasks_go_with_their_images_while_recent_and_open_ones_stay(client, session_factory, redis,
                                                                                images, settings):
    old_done, old_open, recent = (int(client.post("/mj/submit/imagine", json={
        "prompt": p, "notifyHook": "https://hooks.example.com/x"}).get_json()["result"]) for p in ("a", "b", "c"))
    executor = make_executor(session_factory, redis, images)
    executor.listeners = [WebhookOutbox()]
    for task_id in (old_done, recent):
        executor.execute(task_id)
    now = 10_000 * DAY_MS
    with session_factory() as s:
        for task_id, age_days in ((old_done, 31), (old_open, 31), (recent, 29)):
            s.get(Task, task_id).submit_time = now - age_days * DAY_MS
        s.commit()
    assert (settings.images_dir / str(old_done)).exists()
    done = apply_retention(session_factory, images, 30, clock=lambda: now)
    assert done["tasks"] == 1 and done["deliveries"] >= 1 and done["images"] >= 6  # grid, previews, cells
    with session_factory() as s:
        assert s.get(Task, old_done) is None
        assert s.get(Task, old_open) is not None and s.get(Task, recent) is not None
        assert s.query(WebhookDelivery).filter_by(task_id=old_done).count() == 0
    assert not (settings.images_dir / str(old_done)).exists()
    assert (settings.images_dir / str(recent)).exists()
    assert apply_retention(session_factory, images, 0, clock=lambda: now * 2)["tasks"] == 0


class _DownStore:
    """A bucket that is unreachable: every delete fails."""

    def delete_task(self, task_id: int) -> int:
        raise OSError("connection refused")


def test_a_store_that_cannot_delete_leaves_its_files_and_says_so_while_the_rows_still_go(client, session_factory,
                                                                                        caplog):
    task_ids = [int(client.post("/mj/submit/imagine", json={"prompt": p}).get_json()["result"]) for p in ("a", "b")]
    now = 10_000 * DAY_MS
    with session_factory() as s:
        for task_id in task_ids:
            task = s.get(Task, task_id)
            task.status, task.submit_time = "FAILURE", now - 40 * DAY_MS
        s.commit()
    done = apply_retention(session_factory, _DownStore(), 30, clock=lambda: now)  # type: ignore[arg-type]
    assert (done["tasks"], done["images"]) == (2, 0)
    with session_factory() as s:
        assert all(s.get(Task, task_id) is None for task_id in task_ids)
    assert caplog.text.count("not deleted: connection refused") == 2
