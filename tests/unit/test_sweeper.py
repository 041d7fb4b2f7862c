"""The sweeper fails jobs that stopped moving, frees their slots and cleans stale queue entries."""
from __future__ import annotations

import fakeredis

from app.models import Account, Task, WebhookDelivery
from tests.unit.test_executor import FakeClock
from workers.events import TaskEvents
from workers.scheduler import Candidate, Scheduler
from workers.sweeper import sweep
from workers.webhook_outbox import WebhookOutbox


def submit(client, prompt="a fox", hook=None):
    body = {"prompt": prompt, **({"notifyHook": hook} if hook else {})}
    return int(client.post("/mj/submit/imagine", json=body).get_json()["result"])


def test_a_job_without_progress_for_its_account_timeout_fails_and_frees_its_slot(client, session_factory, app):
    clock = FakeClock()
    scheduler = Scheduler(fakeredis.FakeRedis(server=fakeredis.FakeServer()), clock=clock)
    scheduler.redis.set("mjq:sched:epoch", 1)
    stuck, moving = submit(client, "stuck", hook="https://hooks.example.com/x"), submit(client, "moving")
    with session_factory() as s:
        for task_id, age_min in ((stuck, 6), (moving, 4)):
            task = s.get(Task, task_id)
            task.status, task.updated_at, task.account_id = "IN_PROGRESS", clock.now - age_min * 60_000, "sim-1"
        s.commit()
    scheduler.admit([Candidate("sim-1", 1, 5)], "fast", stuck, 1)
    assert scheduler.try_acquire("sim-1", "fast", stuck, 1, 1)[0] is not None
    done = sweep(session_factory, scheduler, [WebhookOutbox()], max_wait_seconds=900, clock=clock)
    assert done["timed_out"] == 1
    with session_factory() as s:
        task = s.get(Task, stuck)
        assert task.status == "FAILURE" and "no progress from the upstream for 5 min" in task.fail_reason
        assert s.get(Task, moving).status == "IN_PROGRESS"
        assert [d.task_status for d in s.query(WebhookDelivery).filter_by(task_id=stuck)] == ["FAILURE"]
    assert scheduler.holders("sim-1", "fast") == 0


MINUTE_MS = 60_000


def test_an_account_timeout_of_2_min_counts_from_the_last_progress_event_not_from_the_start(
        client, session_factory):
    clock = FakeClock()
    with session_factory() as s:
        s.get(Account, "sim-1").timeout_minutes = 2
        s.commit()
    quick, patient = submit(client, "on a 2-min account"), submit(client, "on a 5-min account")
    with session_factory() as s:
        s.get(Task, quick).account_id, s.get(Task, patient).account_id = "sim-1", "sim-2"
        s.commit()
    events = {task_id: TaskEvents(session_factory, None, task_id, None, [], clock) for task_id in (quick, patient)}
    for task_id in (quick, patient):
        events[task_id].transition(status="IN_PROGRESS", startTime=clock(), progress="0%")
    for minute in range(1, 11):  # progress every minute for 10 minutes, swept every minute
        clock.now += MINUTE_MS
        for task_id in (quick, patient):
            events[task_id].transition(progress=f"{minute * 9}%")
        assert sweep(session_factory, None, [], max_wait_seconds=900, clock=clock)["timed_out"] == 0
    clock.now += MINUTE_MS  # started 11 min ago, last progress 1 min ago
    assert sweep(session_factory, None, [], max_wait_seconds=900, clock=clock)["timed_out"] == 0
    clock.now += 90_000  # 2.5 min without progress: past 2 min, not past 5
    assert sweep(session_factory, None, [], max_wait_seconds=900, clock=clock)["timed_out"] == 1
    with session_factory() as s:
        failed = s.get(Task, quick)
        assert (failed.status, failed.fail_reason) == ("FAILURE", "timed out: no progress from the upstream for 2 min")
        assert (s.get(Task, patient).status, s.get(Task, patient).progress) == ("IN_PROGRESS", "90%")


def test_a_job_that_never_started_within_the_wait_limit_fails(client, session_factory):
    clock = FakeClock()
    old = submit(client, "old")
    with session_factory() as s:
        s.get(Task, old).submit_time = clock.now - 1000 * 1000
        s.commit()
    fresh = submit(client, "fresh")
    with session_factory() as s:
        s.get(Task, fresh).submit_time = clock.now
        s.commit()
    assert sweep(session_factory, None, [], max_wait_seconds=900, clock=clock)["waited_too_long"] == 1
    with session_factory() as s:
        assert "not started within 900 s" in s.get(Task, old).fail_reason
        assert s.get(Task, fresh).status == "NOT_START"


def test_queue_entries_of_finished_tasks_are_dropped(client, session_factory):
    scheduler = Scheduler(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    done_id, open_id = submit(client, "done"), submit(client, "open")
    with session_factory() as s:
        s.get(Task, done_id).status = "SUCCESS"
        s.commit()
    for task_id in (done_id, open_id):
        scheduler.admit([Candidate("sim-1", 1, 5)], "fast", task_id, task_id)
    assert sweep(session_factory, scheduler, [], max_wait_seconds=900)["stale_queue_entries"] == 1
    assert scheduler.waiting("sim-1", "fast") == [open_id]
