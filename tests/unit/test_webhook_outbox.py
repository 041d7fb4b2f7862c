"""The outbox: delivery rows are written inside task transitions, coalesced, and sent on mj.webhooks only."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app import protocol
from app.models import Task, now_ms
from config import Settings
from tests.fakes.webhooks import SECRET, Receiver, deliveries, events_for, hooked_task, make_deliverer, verify
from tests.unit.conftest import drain
from tests.unit.test_executor import FakeClock, make_executor
from tests.unit.test_webhook_api import deliver_due, run_job
from workers import queues
from workers.events import TaskEvents
from workers.webhook_outbox import WebhookOutbox
from workers.webhooks import DELIVER, celery_enqueuer


class Boom(RuntimeError):
    pass


class FailingWriter:
    """An outbox writer that fails after the first one wrote: the whole transition must vanish."""

    def write_in_transaction(self, session, task, data, seq):
        raise Boom("disk full")


def test_the_delivery_row_commits_with_the_transition_or_not_at_all(session_factory):
    clock = FakeClock()
    task_id = hooked_task(session_factory, "http://hooks.example.com/h", clock)
    events = TaskEvents(session_factory, None, task_id, 1, [WebhookOutbox(clock=clock), FailingWriter()], clock)
    with pytest.raises(Boom):
        events.transition(status=protocol.SUBMITTED, progress="0%")
    with session_factory() as session:
        task = session.get(Task, task_id)
        assert (task.status, task.seq) == (protocol.NOT_START, 0)
    assert deliveries(session_factory) == []
    TaskEvents(session_factory, None, task_id, 1, [WebhookOutbox(clock=clock)], clock).transition(
        status=protocol.SUBMITTED, progress="0%")
    [row] = deliveries(session_factory)
    assert (row.seq, row.task_status, row.status, row.event_id) == (1, "SUBMITTED", "pending", f"msg_{task_id}_1")


def test_a_task_without_a_hook_writes_nothing(session_factory):
    clock = FakeClock()
    task_id = hooked_task(session_factory, "http://hooks.example.com/h", clock)
    with session_factory() as session:
        task = session.get(Task, task_id)
        task.notify_hook, task.properties = None, {}
        session.commit()
    events_for(session_factory, task_id, WebhookOutbox(clock=clock), clock).transition(status=protocol.SUBMITTED)
    assert deliveries(session_factory) == []


def test_progress_is_coalesced_to_one_post_per_interval_while_status_changes_always_go(session_factory):
    clock = FakeClock(now_ms())  # near real time, so the signatures verify
    start = clock.now
    script = {0: {"status": protocol.SUBMITTED, "progress": "0%"}, 100: {"status": protocol.IN_PROGRESS},
              500: {"progress": "15%"}, 1000: {"progress": "31%"}, 1500: {"progress": "46%"},
              2200: {"progress": "62%"}, 2600: {"progress": "78%"}, 3000: {"progress": "93%"},
              3200: {"status": protocol.SUCCESS, "progress": "100%"}}
    posted_at = {}
    with Receiver() as rx:
        task_id = hooked_task(session_factory, rx.url(), clock)
        events = events_for(session_factory, task_id, WebhookOutbox(2.0, 0.0, None, clock), clock)
        deliverer = make_deliverer(session_factory, clock)
        for tick in range(0, 6000, 100):  # time moves in 100 ms steps; due rows go out at each step
            clock.now = start + tick
            if tick in script:
                events.transition(**script[tick])
            for delivery_id in deliverer.sweep():
                if deliverer.attempt(delivery_id) == "delivered":
                    posted_at[len(rx.received) - 1] = tick
        got = rx.received
    seen = [(verify(SECRET, r)["status"], verify(SECRET, r)["progress"]) for r in got]
    assert seen == [("SUBMITTED", "0%"), ("IN_PROGRESS", "0%"), ("IN_PROGRESS", "46%"), ("SUCCESS", "100%")]
    assert list(posted_at.values()) == [0, 100, 2100, 3200]
    seqs = [int(r.headers["webhook-sequence"]) for r in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [r.status for r in deliveries(session_factory, task_id)] == ["delivered", "delivered", "delivered",
                                                                       "superseded", "delivered"]


def test_a_job_run_by_the_executor_posts_its_events_with_the_body_fetch_returns(client, session_factory, redis,
                                                                                  images):
    with Receiver() as rx:
        answer = client.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": rx.url()})
        task_id = answer.get_json()["result"]
        clock = FakeClock(now_ms())
        executor = make_executor(session_factory, redis, images, clock=clock)
        executor.listeners = [WebhookOutbox(2.0, 0.0, None, clock)]
        executor.execute(int(task_id))
        deliverer = make_deliverer(session_factory, clock)
        for _ in range(3):
            for delivery_id in deliverer.sweep():
                deliverer.attempt(delivery_id)
            clock.now += 2_000
        got = rx.received
    bodies = [verify(SECRET, r) for r in got]
    assert bodies[0]["status"] == "SUBMITTED" and bodies[-1]["status"] == "SUCCESS"
    assert got[-1].body == client.get(f"/mj/task/{task_id}/fetch").data
    assert [int(r.headers["webhook-sequence"]) for r in got] == sorted(int(r.headers["webhook-sequence"]) for r in got)


def test_the_fast_path_sends_each_new_delivery_id_on_the_webhook_queue_only(client, celery, session_factory, redis,
                                                                            images):
    task_id = client.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": "https://hooks.example.com/h"}
                          ).get_json()["result"]
    drain(celery, queues.FAST)
    executor = make_executor(session_factory, redis, images)
    executor.listeners = [WebhookOutbox(2.0, 0.0, celery_enqueuer(celery))]
    executor.execute(int(task_id))
    messages = drain(celery, queues.WEBHOOKS)
    rows = deliveries(session_factory, int(task_id))
    assert {m["task"] for m in messages} == {DELIVER}
    assert sorted(int(m["args"][0]) for m in messages) == sorted(r.id for r in rows)
    assert drain(celery, queues.FAST) == [] and drain(celery, queues.NORMAL) == []
    with session_factory() as session:
        assert session.scalar(select(Task.seq).where(Task.id == int(task_id))) == rows[-1].seq


def test_a_task_submitted_without_notify_hook_goes_to_mjq_notify_hook_and_one_with_it_to_its_own(
        settings, celery, redis, accounts, session_factory, images):
    from app import create_app

    clock = FakeClock(now_ms())
    with Receiver() as default, Receiver() as own:
        env = {"MJQ_NOTIFY_HOOK": default.url("/default")}
        client = create_app(Settings.from_env(env, database_url=settings.database_url, data_dir=settings.data_dir,
                                              public_url=settings.public_url), celery=celery, redis=redis
                            ).test_client()
        plain = run_job(client, session_factory, redis, images, None, clock)
        hooked = run_job(client, session_factory, redis, images, own.url("/own"), clock)
        deliver_due(make_deliverer(session_factory, clock))
        to_default, to_own = list(default.received), list(own.received)
    assert {verify(SECRET, r)["id"] for r in to_default} == {plain}
    assert {verify(SECRET, r)["id"] for r in to_own} == {hooked}
    assert verify(SECRET, to_default[-1])["status"] == verify(SECRET, to_own[-1])["status"] == "SUCCESS"


def test_the_progress_interval_of_the_workers_outbox_comes_from_the_environment(settings, session_factory):
    from workers.runtime import build_runtime

    runtime = build_runtime(Settings.from_env({"MJQ_WEBHOOK_PROGRESS_INTERVAL_SECONDS": "7.5"},
                                              database_url=settings.database_url, data_dir=settings.data_dir))
    assert runtime.webhook_outbox is not None
    with Receiver() as rx:
        task_id = hooked_task(session_factory, rx.url())
        events = events_for(session_factory, task_id, runtime.webhook_outbox)
        events.transition(status=protocol.SUBMITTED, progress="0%")
        events.transition(status=protocol.IN_PROGRESS)
        deliver_due(make_deliverer(session_factory, now_ms))  # the start of IN_PROGRESS is out: progress waits for it
        events.transition(progress="15%")
    started, progress = deliveries(session_factory, task_id)[1:]
    assert (started.status, progress.progress) == ("delivered", "15%")
    assert progress.due_at - started.due_at == 7_500
