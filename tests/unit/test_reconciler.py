"""The reconciler makes the row, not the Redis message, the promise."""
from __future__ import annotations

import json

from app.models import Task
from tests.unit.conftest import drain
from workers import queues
from workers.dispatch import Dispatcher
from workers.reconciler import EPOCH_KEY, SUBMIT_GRACE_MS, reconcile


def make_task(session_factory, task_id, status="NOT_START", enqueued_at=None, updated_at=0, mode="FAST"):
    with session_factory() as s:
        s.add(Task(id=task_id, action="IMAGINE", status=status, prompt="p", prompt_en="p", submit_time=0,
                   properties={}, buttons=[], mode=mode, queue=queues.queue_for_mode(mode), bot_type="MID_JOURNEY",
                   inputs={}, attempt=0, seq=0, updated_at=updated_at, enqueued_at=enqueued_at))
        s.commit()


def test_a_row_whose_message_was_never_sent_is_enqueued(session_factory, redis, celery):
    redis.set(EPOCH_KEY, "1")
    make_task(session_factory, 1, enqueued_at=None)
    make_task(session_factory, 2, enqueued_at=5, mode="RELAX")
    sent = reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: SUBMIT_GRACE_MS + 1)
    assert sent == {"unsent": 1, "after_wipe": 0, "orphaned": 0, "dropped": 0}
    assert [m["args"] for m in drain(celery, queues.FAST)] == [["1", "IMAGINE"]]
    assert drain(celery, queues.NORMAL) == []
    with session_factory() as s:
        assert s.get(Task, 1).enqueued_at is not None


def test_a_fresh_row_is_left_to_the_api_for_the_grace_period(session_factory, redis, celery):
    redis.set(EPOCH_KEY, "1")
    make_task(session_factory, 1, enqueued_at=None)
    assert reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: 10)["unsent"] == 0


def test_after_redis_lost_everything_open_rows_are_enqueued_again(session_factory, redis, celery):
    now = 1_000_000
    make_task(session_factory, 1, enqueued_at=5)                                          # waiting
    make_task(session_factory, 2, status="IN_PROGRESS", enqueued_at=5, updated_at=now - 120_000)  # holder gone
    make_task(session_factory, 3, status="IN_PROGRESS", enqueued_at=5, updated_at=now - 1_000)    # moving
    make_task(session_factory, 4, status="SUCCESS", enqueued_at=5)
    sent = reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: now)
    assert sent == {"unsent": 0, "after_wipe": 2, "orphaned": 0, "dropped": 0}
    assert sorted(m["args"][0] for m in drain(celery, queues.FAST)) == ["1", "2"]
    # The marker is back: the next sweep does not enqueue again.
    assert reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: now)["after_wipe"] == 0


def test_a_claimed_job_whose_execution_stopped_beating_is_sent_again_at_once(session_factory, redis, celery):
    from workers.scheduler import heartbeat_key

    redis.set(EPOCH_KEY, "1")
    now = 1_000_000
    make_task(session_factory, 1, status="IN_PROGRESS", enqueued_at=5, updated_at=now - 60_000)  # worker died
    make_task(session_factory, 2, status="IN_PROGRESS", enqueued_at=5, updated_at=now - 60_000)  # alive, slow
    make_task(session_factory, 3, status="IN_PROGRESS", enqueued_at=5, updated_at=now - 1_000)   # just moved
    with session_factory() as s:
        for task in s.query(Task):
            task.attempt = 1
        s.commit()
    redis.set(heartbeat_key(2), 1)
    sent = reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: now,
                     dead_after_ms=30_000)
    assert sent["orphaned"] == 1
    assert [m["args"][0] for m in drain(celery, queues.FAST)] == ["1"]


def test_a_stopped_execution_already_sent_again_and_waiting_in_its_queue_is_not_sent_once_more(
        session_factory, redis, celery):
    redis.set(EPOCH_KEY, "1")
    now = 1_000_000
    for task_id in (1, 2):
        make_task(session_factory, task_id, status="IN_PROGRESS", enqueued_at=5, updated_at=now - 60_000)
    with session_factory() as s:
        for task in s.query(Task):
            task.attempt = 1
        s.commit()
    redis.rpush(queues.FAST, kombu_message(2))  # sent by an earlier sweep, behind a backlog
    sent = reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: now,
                     dead_after_ms=30_000)
    assert sent["orphaned"] == 1
    assert [m["args"][0] for m in drain(celery, queues.FAST)] == ["1"]


def test_a_duplicate_message_for_a_live_execution_is_dropped(client, session_factory, redis, images):
    from tests.unit.test_executor import make_executor
    from workers.executor import SKIPPED
    from workers.scheduler import LeaseKeeper, Scheduler

    task_id = int(client.post("/mj/submit/imagine", json={"prompt": "cat"}).get_json()["result"])
    executor = make_executor(session_factory, redis, images)
    executor.keeper = LeaseKeeper(Scheduler(redis))
    with session_factory() as s:
        task = s.get(Task, task_id)
        task.attempt, task.updated_at = 1, executor.clock() - 60_000  # claimed a minute ago
        s.commit()
    redis.set(f"mjq:exec:{task_id}", 1)  # attempt 1 runs somewhere
    assert executor.execute(task_id) == SKIPPED
    with session_factory() as s:
        assert s.get(Task, task_id).attempt == 1
    redis.delete(f"mjq:exec:{task_id}")  # it died: the next message takes over and finishes the job
    assert executor.execute(task_id) == "done"
    assert redis.get(f"mjq:exec:{task_id}") is None


def kombu_message(task_id: int) -> str:
    """A message as kombu's Redis transport stores it in a queue's list (the fields mjq reads)."""
    return json.dumps({"body": "W10=", "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": {"lang": "py", "task": "mj.execute", "id": str(task_id)}, "properties": {}})


def test_a_never_claimed_row_whose_message_redis_dropped_is_sent_again(session_factory, redis, celery):
    redis.set(EPOCH_KEY, "1")
    now = 1_000_000
    sent_long_ago = now - 120_000
    make_task(session_factory, 1, enqueued_at=sent_long_ago)                 # message waiting in the list
    make_task(session_factory, 2, enqueued_at=sent_long_ago)                 # reserved by a live worker
    make_task(session_factory, 3, enqueued_at=sent_long_ago)                 # dropped by a dying worker
    make_task(session_factory, 4, enqueued_at=now - 1_000)                   # just sent: not looked at
    make_task(session_factory, 5, enqueued_at=sent_long_ago, mode="RELAX")   # dropped from the normal queue
    redis.rpush(queues.FAST, kombu_message(1))
    redis.hset("unacked", "tag-2", json.dumps([json.loads(kombu_message(2)), "", queues.FAST]))
    redis.hset("unacked", "tag-x", json.dumps([{"headers": {"id": "a-celery-uuid"}}, "", queues.WEBHOOKS]))

    sent = reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: now)

    assert sent == {"unsent": 0, "after_wipe": 0, "orphaned": 0, "dropped": 2}
    assert [m["args"] for m in drain(celery, queues.FAST)] == [["3", "IMAGINE"]]
    assert [m["args"] for m in drain(celery, queues.NORMAL)] == [["5", "IMAGINE"]]
    with session_factory() as s:
        assert s.get(Task, 3).enqueued_at == now
    # Sent again just now: the next sweep leaves it to the new message.
    assert reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: now)["dropped"] == 0


def test_a_queue_too_long_to_read_is_not_searched_for_dropped_messages(session_factory, redis, celery, monkeypatch):
    from workers import reconciler

    monkeypatch.setattr(reconciler, "MAX_SCANNED_MESSAGES", 2)
    redis.set(EPOCH_KEY, "1")
    make_task(session_factory, 1, enqueued_at=5)
    redis.rpush(queues.FAST, *(kombu_message(i) for i in (7, 8, 9)))
    sent = reconcile(session_factory, redis, Dispatcher(celery), idle_ms=60_000, clock=lambda: 1_000_000)
    assert sent["dropped"] == 0 and drain(celery, queues.FAST) == []
