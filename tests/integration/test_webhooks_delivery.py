"""Webhook delivery with real `celery worker -Q mj.webhooks` processes, PostgreSQL and Redis.

The schedule is scaled down through MJQ_WEBHOOK_SCHEDULE and MJQ_WEBHOOK_TIMEOUT_SECONDS, except
for the hanging receiver, which meets the default 15 s timeout; receivers are real HTTP servers on
loopback (MJQ_WEBHOOK_ALLOW_PRIVATE=true for that only).
"""
from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from standardwebhooks.webhooks import WebhookVerificationError

from app import protocol
from app.models import Task, WebhookAttempt, WebhookDelivery, WebhookDisabledEndpoint, WebhookSecret
from app.models_tenancy import ApiKey
from config import Settings
from tests.fakes.webhooks import SECRET, Receiver, Reply, deliveries, events_for, hooked_task, verify
from tests.processes import Process, celery_worker, wait_for
from workers.celery_app import make_celery
from workers.webhook_outbox import WebhookOutbox
from workers.webhooks import celery_enqueuer

pytestmark = pytest.mark.integration

_names = itertools.count(1)


@pytest.fixture
def clean(session_factory):
    yield
    with session_factory() as session:
        for table in (WebhookAttempt, WebhookDelivery, WebhookDisabledEndpoint, Task):
            session.execute(delete(table))
        session.commit()


@pytest.fixture
def started(log_dir: Path):
    procs: list[Process] = []

    def start(env: dict[str, str], concurrency: int = 20, beat: bool = False) -> Process:
        """A webhook worker as the Procfile runs it; `beat` embeds beat (the sweep) like the beat process."""
        name = f"webhooks{next(_names)}"
        extra = ["-B", "-s", str(log_dir / f"{name}-beat-schedule")] if beat else []
        proc = celery_worker("mj.webhooks", f"{name}@itest", env, log_dir, concurrency=concurrency, extra_args=extra)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.signal_group(signal.SIGKILL)
        proc.stop()


def webhook_env(stack_env: dict[str, str], **settings: str) -> dict[str, str]:
    env = dict(stack_env, MJQ_WEBHOOK_ALLOW_PRIVATE="true", MJQ_WEBHOOK_SECRET=SECRET,
               MJQ_WEBHOOK_SWEEP_INTERVAL_SECONDS="0.5")
    env.update(settings)
    return env


def announce(session_factory, env: dict[str, str], url: str, status: str = protocol.SUCCESS) -> WebhookDelivery:
    """A hooked task announces one event from this process, with the fast path to the real broker."""
    settings = Settings.from_env(env)
    outbox = WebhookOutbox(settings.webhook_progress_interval_seconds, 0.0, celery_enqueuer(make_celery(settings)))
    task_id = hooked_task(session_factory, url)
    events_for(session_factory, task_id, outbox).transition(status=status, progress="100%")
    return deliveries(session_factory, task_id)[-1]


def row_of(session_factory, delivery_id: int) -> WebhookDelivery:
    with session_factory() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row


def test_a_500_receiver_is_retried_on_the_scaled_schedule_and_then_given_up(stack_env, session_factory, started,
                                                                            clean):
    schedule = (0.0, 1.0, 2.0, 3.0)
    env = webhook_env(stack_env, MJQ_WEBHOOK_SCHEDULE=",".join(map(str, schedule)), MJQ_WEBHOOK_TIMEOUT_SECONDS="2")
    started(env, beat=True)
    with Receiver(lambda i, r: Reply(500)) as rx:
        row = announce(session_factory, env, rx.url())
        got = rx.wait_for(4, timeout=20)
        time.sleep(4)  # longer than the last delay: nothing more may come
        assert len(rx.received) == 4
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    print(f"attempt gaps {[round(g, 3) for g in gaps]} s for the schedule {schedule[1:]}")
    for gap, planned in zip(gaps, schedule[1:], strict=True):
        assert 0.9 * planned - 0.05 <= gap <= 1.1 * planned + 0.5, gaps  # 0.5 s for the worker's own hops
    assert {r.headers["webhook-id"] for r in got} == {row.event_id}
    assert all(verify(SECRET, r) for r in got)
    done = wait_for(lambda: (r := row_of(session_factory, row.id)).status == "failed" and r, 5, "the delivery to fail")
    assert (done.attempts, done.last_status_code, done.next_attempt_at) == (4, 500, None)


def test_a_hanging_receiver_is_cut_at_15_s_and_the_only_worker_thread_serves_the_next_within_16_s(
        stack_env, session_factory, started, clean):
    env = webhook_env(stack_env)  # MJQ_WEBHOOK_TIMEOUT_SECONDS at its default
    assert Settings.from_env(env).webhook_timeout_seconds == 15
    started(env, concurrency=1)
    with Receiver(lambda i, r: Reply(204, delay=60) if r.path == "/slow" else Reply(204)) as rx:
        slow = announce(session_factory, env, rx.url("/slow"))
        rx.wait_for(1, timeout=10)
        fast = announce(session_factory, env, rx.url("/fast"))  # queued behind the hanging attempt
        got = rx.wait_for(2, timeout=25)
    assert [r.path for r in got[:2]] == ["/slow", "/fast"]
    with session_factory() as session:
        cut = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == slow.id)
                              .order_by(WebhookAttempt.id)).first()
    assert cut is not None and cut.finished_at is not None
    cut_after = (cut.finished_at - cut.started_at) / 1000
    next_after = got[1].at - got[0].at
    print(f"the hanging attempt was cut after {cut_after:.3f} s (timeout 15 s); the next delivery reached its "
          f"receiver {next_after:.3f} s after the hanging one began, on a worker of one thread")
    assert 14.5 <= cut_after <= 15.5
    assert next_after < 16
    assert (cut.status_code, cut.error) == (None, "no answer within 15s")
    assert wait_for(lambda: row_of(session_factory, fast.id).status == "delivered", 5, "the second delivery")


def test_kill_9_of_the_webhook_worker_mid_post_loses_no_event(stack_env, session_factory, started, clean):
    env = webhook_env(stack_env, MJQ_WEBHOOK_TIMEOUT_SECONDS="5")
    seen: Counter[str] = Counter()

    def first_copy_hangs(i: int, request) -> Reply:
        seen[request.headers["webhook-id"]] += 1
        return Reply(204, delay=60) if seen[request.headers["webhook-id"]] == 1 else Reply(204)

    first = started(env)
    with Receiver(first_copy_hangs) as rx:
        rows = [announce(session_factory, env, rx.url()) for _ in range(5)]
        rx.wait_for(5, timeout=15)  # all five POSTs are in flight, the receiver sits on them
        first.signal_group(signal.SIGKILL)
        first.stop()
        assert {row_of(session_factory, r.id).status for r in rows} == {"delivering"}
        started(env, beat=True)
        got = rx.wait_for(10, timeout=40)  # each lease (5 s + 5 s) runs out, the sweep re-arms, the new worker sends
        wait_for(lambda: all(row_of(session_factory, r.id).status == "delivered" for r in rows), 10,
                 "every delivery to be marked delivered")
    ids = Counter(r.headers["webhook-id"] for r in got)
    assert ids == Counter({r.event_id: 2 for r in rows})  # every event arrived; the duplicate has the same id
    assert all(verify(SECRET, r) for r in got)
    with session_factory() as session:
        log = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == rows[0].id)
                              .order_by(WebhookAttempt.id)).all()
    assert [(a.number, a.status_code) for a in log] == [(1, None), (2, 204)] and "worker stopped" in log[0].error


def test_a_hooked_job_posts_its_events_in_order_through_the_whole_stack(stack_env, api, workers, session_factory,
                                                                       started, clean):
    env = webhook_env(stack_env)
    started(env, beat=True)
    with Receiver() as rx:
        body = api.post("/mj/submit/imagine", json={"prompt": "a fox with a hook", "notifyHook": rx.url()}).get_json()
        assert body["code"] == 1

        def finished() -> bool:
            return any(verify(SECRET, r)["status"] == "SUCCESS" for r in list(rx.received))

        wait_for(finished, 40, "the SUCCESS webhook")
        got = list(rx.received)
    tasks = [verify(SECRET, r) for r in got]
    assert tasks[0]["status"] == "SUBMITTED" and tasks[-1]["status"] == "SUCCESS"
    seqs = [int(r.headers["webhook-sequence"]) for r in got]
    assert seqs == sorted(seqs)
    assert got[-1].body == api.get(f"/mj/task/{body['result']}/fetch").data
    listed = api.get(f"/mj/task/{body['result']}/deliveries").get_json()
    assert listed[-1]["status"] == "delivered" and listed[-1]["attemptLog"][0]["statusCode"] == 204


def test_a_keys_job_is_signed_with_the_keys_own_secret_by_the_real_worker(stack_env, api, workers, session_factory,
                                                                       started, clean):
    started(webhook_env(stack_env), beat=True)
    key = api.post("/mj/admin/keys", json={"name": "hooked key"}).get_json()["result"]  # open mode: anyone is admin
    try:
        with Receiver() as rx:
            body = api.post("/mj/submit/imagine", json={"prompt": "a fox with a key", "notifyHook": rx.url()},
                            headers={"Authorization": f"Bearer {key['key']}"}).get_json()
            assert body["code"] == 1

            def finished() -> bool:
                return any(b'"status":"SUCCESS"' in r.body for r in list(rx.received))

            wait_for(finished, 40, "the SUCCESS webhook")
            got = list(rx.received)
        assert [verify(key["webhookSecret"], r)["id"] for r in got] == [body["result"]] * len(got)
        with pytest.raises(WebhookVerificationError):
            verify(SECRET, got[-1])
    finally:
        with session_factory() as session:
            session.execute(delete(WebhookSecret).where(WebhookSecret.scope == key["id"]))
            session.execute(delete(ApiKey).where(ApiKey.id == key["id"]))
            session.commit()
