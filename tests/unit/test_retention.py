"""Retention deletes old finished tasks with their images and webhook history, a batch at a time, and
nothing else: young tasks, open tasks and webhooks still owed to a receiver stay."""
from __future__ import annotations

from sqlalchemy import func, select

from app import protocol
from app.images import upload_day
from app.models import Task, WebhookAttempt, WebhookDelivery, now_ms
from tests.fakes.webhooks import Receiver, Reply, events_for, hooked_task, make_deliverer
from tests.unit.test_executor import FakeClock, make_executor
from tests.unit.test_submit_imagine import png_data_url
from workers.retention import DAY_MS, apply_retention
from workers.webhook_outbox import WebhookOutbox


def run_hooked_jobs(client, session_factory, redis, images, clock, hook: str, count: int) -> list[int]:
    """`count` imagines with `hook`, each run to SUCCESS by the executor (images and webhook rows written)."""
    task_ids = [int(client.post("/mj/submit/imagine", json={"prompt": f"a fox {n}", "notifyHook": hook})
                    .get_json()["result"]) for n in range(count)]
    executor = make_executor(session_factory, redis, images, clock=clock)
    executor.listeners = [WebhookOutbox(0.0, 0.0, None, clock)]
    for task_id in task_ids:
        executor.execute(task_id)
    return task_ids


def settle(deliverer, clock, rounds: int = 3) -> None:
    """Send every due delivery, then again after the first retry delay, `rounds` times."""
    for _ in range(rounds):
        for delivery_id in deliverer.sweep():
            deliverer.attempt(delivery_id)
        clock.now += 6_000


def age(session_factory, task_ids: list[int], days: float, now: int) -> None:
    with session_factory() as s:
        for task_id in task_ids:
            s.get(Task, task_id).submit_time = now - int(days * DAY_MS)
        s.commit()


def history(session_factory, task_ids: list[int]) -> tuple[int, int]:
    """(deliveries, attempts) stored for these tasks."""
    with session_factory() as s:
        deliveries = s.scalars(select(WebhookDelivery.id).where(WebhookDelivery.task_id.in_(task_ids))).all()
        attempts = s.scalar(select(func.count()).select_from(WebhookAttempt)
                            .where(WebhookAttempt.delivery_id.in_(deliveries)))
    return len(deliveries), int(attempts or 0)


def test_old_finished_tasks_go_batch_by_batch_with_images_and_webhook_history_while_young_and_open_ones_stay(
        client, session_factory, redis, images, settings):
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        finished = run_hooked_jobs(client, session_factory, redis, images, clock, rx.url(), 7)
        settle(make_deliverer(session_factory, clock), clock)
    old_open = int(client.post("/mj/submit/imagine", json={"prompt": "still waiting"}).get_json()["result"])
    old, young = finished[:5], finished[5:]
    now = clock.now
    age(session_factory, [*old, old_open], 31, now)
    age(session_factory, young, 29, now)
    assert all((settings.images_dir / str(t)).exists() for t in finished)
    assert history(session_factory, old)[1] >= 5

    # Batches of 2, at most 2 per pass: the first pass takes 4 of the 5, the next pass the last one.
    first = apply_retention(session_factory, images, 30, batches=2, clock=lambda: now, batch_size=2)
    second = apply_retention(session_factory, images, 30, batches=2, clock=lambda: now, batch_size=2)
    third = apply_retention(session_factory, images, 30, batches=2, clock=lambda: now, batch_size=2)
    assert (first["tasks"], second["tasks"], third["tasks"]) == (4, 1, 0)
    assert first["images"] + second["images"] >= 5 * 6  # grid, previews, thumbnails, cells of each
    with session_factory() as s:
        assert [t for t in old if s.get(Task, t) is not None] == []
        assert all(s.get(Task, t) is not None for t in [*young, old_open])
    assert history(session_factory, old) == (0, 0)
    assert [t for t in old if (settings.images_dir / str(t)).exists()] == []
    young_deliveries, young_attempts = history(session_factory, young)
    assert young_deliveries >= 2 and young_attempts >= 2
    assert all((settings.images_dir / str(t)).exists() for t in young)
    assert apply_retention(session_factory, images, 0, clock=lambda: now * 2)["tasks"] == 0  # 0 keeps forever


def test_an_old_task_whose_webhook_is_still_being_retried_stays_until_the_receiver_has_it(
        client, session_factory, redis, images):
    clock = FakeClock(now_ms())
    down = {"now": True}
    with Receiver(lambda _i, _r: Reply(503) if down["now"] else Reply(204)) as rx:
        [task_id] = run_hooked_jobs(client, session_factory, redis, images, clock, rx.url(), 1)
        deliverer = make_deliverer(session_factory, clock)
        settle(deliverer, clock, rounds=1)
        age(session_factory, [task_id], 31, clock.now)
        kept = apply_retention(session_factory, images, 30, clock=clock)
        with session_factory() as s:
            assert s.get(Task, task_id).status == protocol.SUCCESS and kept["tasks"] == 0
        assert history(session_factory, [task_id])[0] >= 2
        down["now"] = False
        settle(deliverer, clock)
    assert any(b'"status":"SUCCESS"' in r.body for r in rx.received)
    assert apply_retention(session_factory, images, 30, clock=clock)["tasks"] == 1
    assert history(session_factory, [task_id]) == (0, 0)


def test_a_long_lived_open_task_loses_the_deliveries_settled_before_the_cutoff_and_keeps_the_rest(session_factory,
                                                                                                 images):
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        task_id = hooked_task(session_factory, rx.url(), clock)
        events = events_for(session_factory, task_id, WebhookOutbox(2.0, 0.0, None, clock), clock)
        events.transition(status=protocol.SUBMITTED)
        events.transition(status=protocol.IN_PROGRESS, progress="0%")
        settle(make_deliverer(session_factory, clock), clock, rounds=1)
        events.transition(status=protocol.IN_PROGRESS, progress="46%")  # not sent yet: pending
    now = clock.now
    with session_factory() as s:
        submitted, started, progress = s.scalars(select(WebhookDelivery).where(WebhookDelivery.task_id == task_id)
                                                 .order_by(WebhookDelivery.seq)).all()
        assert (submitted.status, started.status, progress.status) == ("delivered", "delivered", "pending")
        s.get(Task, task_id).submit_time = now - 40 * DAY_MS
        submitted.updated_at, started.updated_at, progress.updated_at = (now - 35 * DAY_MS, now - 29 * DAY_MS,
                                                                         now - 35 * DAY_MS)
        ids = (submitted.id, started.id, progress.id)
        s.commit()
    done = apply_retention(session_factory, images, 30, clock=lambda: now)
    assert (done["tasks"], done["deliveries"]) == (0, 1)
    with session_factory() as s:
        assert s.get(Task, task_id).status == protocol.IN_PROGRESS
        assert [d for d in ids if s.get(WebhookDelivery, d) is not None] == list(ids[1:])
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)
                        .where(WebhookAttempt.delivery_id == ids[0])) == 0
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)
                        .where(WebhookAttempt.delivery_id == ids[1])) == 1


class _DownStore:
    """A bucket that is unreachable: every delete fails."""

    def delete_task(self, task_id: int) -> int:
        raise OSError("connection refused")

    def delete_uploads_before(self, day: str) -> int:
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
    assert caplog.text.count("not deleted: connection refused") == 3  # two tasks' images, then the uploads
    assert f"uploads before {upload_day(now - 30 * DAY_MS)} not deleted" in caplog.text


def test_uploads_go_a_whole_day_at_a_time_once_that_day_is_past_the_retention(client, images, session_factory):
    """/submit/upload-discord-images makes no task, so its files follow the age of their UTC day's folder."""
    answer = client.post("/mj/submit/upload-discord-images", json={"base64Array": [png_data_url((8, 8))] * 2})
    urls = answer.get_json()["result"]
    assert len(urls) == 2 and all(client.get(u.removeprefix("http://mjq.test")).status_code == 200 for u in urls)
    later = now_ms() + 31 * DAY_MS
    recent = f"uploads/{upload_day(later - DAY_MS)}/kept-0.png"
    images.put(recent, b"\x89PNG")
    assert apply_retention(session_factory, images, 31, clock=lambda: later)["uploads"] == 0  # today is not past
    done = apply_retention(session_factory, images, 30, clock=lambda: later)
    assert done["uploads"] == 2
    assert all(client.get(u.removeprefix("http://mjq.test")).status_code == 404 for u in urls)
    assert images.get(recent) == b"\x89PNG"
    assert apply_retention(session_factory, images, 0, clock=lambda: later + 400 * DAY_MS)["uploads"] == 0
    assert images.get(recent) == b"\x89PNG"  # 0 keeps everything

    listed: list[str] = []  # the folders are listed once per day, not at every pass (every 30 s)
    real = images.delete_uploads_before
    images.delete_uploads_before = lambda day: listed.append(day) or real(day)  # type: ignore[method-assign]
    for clock in (later, later + 60_000, later + DAY_MS):
        apply_retention(session_factory, images, 30, clock=lambda clock=clock: clock)
    assert listed == [upload_day(later + DAY_MS - 30 * DAY_MS)]
