"""Webhook delivery: signatures, the retry schedule, timeouts and what each answer does.

Real receivers on loopback (the guard's allow_private is on for these), a fake clock for the
schedule: an attempt happens when the test sweeps at the time the row says.
"""
from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app import protocol
from app.models import WebhookAttempt, WebhookDisabledEndpoint, now_ms
from config import ConfigError, Settings
from tests.fakes.webhooks import SECRET, Receiver, Reply, deliveries, events_for, hooked_task, make_deliverer, verify
from tests.unit.test_executor import FakeClock
from workers.webhook_outbox import WebhookOutbox
from workers.webhooks import LEASE_MARGIN_MS, QUEUED_HOLD_MS

DEFAULT_SCHEDULE = Settings.from_env({}).webhook_schedule


def one_event(session_factory, url, clock, status=protocol.SUCCESS):
    """A hooked task that announces one event; returns its delivery row."""
    task_id = hooked_task(session_factory, url, clock)
    events_for(session_factory, task_id, WebhookOutbox(2.0, 0.0, None, clock), clock).transition(
        status=status, progress="100%", finishTime=clock())
    [row] = deliveries(session_factory, task_id)
    return row


def reload(session_factory, row):
    [fresh] = [r for r in deliveries(session_factory, row.task_id) if r.id == row.id]
    return fresh


def attempts_of(session_factory, delivery_id):
    with session_factory() as session:
        return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
                                    .order_by(WebhookAttempt.id)))


def test_the_default_schedule_is_the_standard_webhooks_one():
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert Settings.from_env({}).webhook_timeout_seconds == 15


def test_every_attempt_verifies_with_standardwebhooks_keeps_its_id_and_changes_its_timestamp(session_factory):
    clock = FakeClock(now_ms())  # near real time: the library refuses timestamps 5 min off
    with Receiver(lambda i, r: Reply(500 if i < 2 else 204)) as rx:
        row = one_event(session_factory, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock, schedule=(0, 2, 4))
        outcomes = []
        for _ in range(3):
            assert deliverer.sweep() == [row.id]
            outcomes.append(deliverer.attempt(row.id))
            clock.now = reload(session_factory, row).next_attempt_at or clock.now
        assert outcomes == ["pending", "pending", "delivered"]
        got = rx.received
    assert [verify(SECRET, r)["id"] for r in got] == [str(row.task_id)] * 3
    assert {r.headers["webhook-id"] for r in got} == {row.event_id}
    stamps = [int(r.headers["webhook-timestamp"]) for r in got]
    assert stamps[0] < stamps[1] < stamps[2]
    assert all(r.body == row.body.encode() and r.headers["content-type"] == "application/json" for r in got)
    assert {r.headers["webhook-sequence"] for r in got} == {str(row.seq)}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(got[0].body + b" ", got[0].headers)


def test_a_failing_receiver_gets_attempts_on_the_schedule_within_ten_percent_then_none(session_factory):
    clock = FakeClock()
    with Receiver(lambda i, r: Reply(500)) as rx:
        row = one_event(session_factory, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock)
        times = []
        while deliverer.sweep() == [row.id]:
            times.append(clock.now)
            deliverer.attempt(row.id)
            due = reload(session_factory, row).next_attempt_at
            if due is None:
                break
            clock.now = due - 1
            assert deliverer.sweep() == []  # never a millisecond early
            clock.now = due
        final = reload(session_factory, row)
        clock.now += 30 * 86_400_000
        assert deliverer.sweep() == []
        assert len(rx.received) == len(DEFAULT_SCHEDULE) == 10
    gaps = [(b - a) / 1000 for a, b in zip(times, times[1:], strict=False)]
    ratios = [gap / planned for gap, planned in zip(gaps, DEFAULT_SCHEDULE[1:], strict=True)]
    print(f"attempt gaps / planned delays: {[round(r, 3) for r in ratios]}")
    assert all(0.9 <= r <= 1.1 for r in ratios), ratios
    assert len({round(r, 3) for r in ratios}) > 1  # jittered, not a fixed stretch
    assert (final.status, final.attempts, final.next_attempt_at, final.last_status_code) == ("failed", 10, None, 500)
    assert [a.status_code for a in attempts_of(session_factory, row.id)] == [500] * 10


def test_a_hanging_receiver_is_cut_at_the_timeout_and_the_worker_thread_is_free_right_after(session_factory):
    with Receiver(lambda i, r: Reply(204, delay=30)) as hanging, Receiver() as healthy:
        stuck = one_event(session_factory, hanging.url(), now_ms)
        other = one_event(session_factory, healthy.url(), now_ms)
        deliverer = make_deliverer(session_factory, now_ms, timeout=0.5)
        start = time.monotonic()
        assert deliverer.attempt(stuck.id) == "pending"
        cut = time.monotonic() - start
        assert deliverer.attempt(other.id) == "delivered"
        free = time.monotonic() - start
    print(f"cut after {cut:.3f} s (timeout 0.5 s); next delivery done {free:.3f} s after the start")
    assert 0.5 <= cut < 0.9 and free < 1.5
    assert reload(session_factory, stuck).last_error == "no answer within 0.5s"


def test_a_receiver_trickling_its_answer_is_cut_at_the_timeout_too(session_factory):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.wait(0.05):  # one byte per 50 ms: each read is quick, the answer never ends
                try:
                    conn.sendall(b"a")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    row = one_event(session_factory, f"http://localhost:{server.getsockname()[1]}/hook", now_ms)
    start = time.monotonic()
    assert make_deliverer(session_factory, now_ms, timeout=0.6).attempt(row.id) == "pending"
    elapsed = time.monotonic() - start
    stop.set()
    server.close()
    assert 0.6 <= elapsed < 1.0


def test_410_disables_the_endpoint_and_nothing_more_is_sent_to_it(session_factory):
    clock = FakeClock()
    with Receiver(lambda i, r: Reply(410)) as rx:
        task_id = hooked_task(session_factory, rx.url(), clock)
        events = events_for(session_factory, task_id, WebhookOutbox(0, 0, None, clock), clock)
        events.transition(status=protocol.SUBMITTED, progress="0%")
        events.transition(status=protocol.IN_PROGRESS)
        first, second = deliveries(session_factory, task_id)
        deliverer = make_deliverer(session_factory, clock)
        assert deliverer.attempt(first.id) == "disabled"
        events.transition(status=protocol.SUCCESS, progress="100%")
        clock.now += 10 * 86_400_000
        assert deliverer.sweep() == []
        assert len(rx.received) == 1
    assert [r.status for r in deliveries(session_factory, task_id)] == ["disabled"] * 3
    with session_factory() as session:
        assert session.get(WebhookDisabledEndpoint, first.endpoint).url == rx.url()


@pytest.mark.parametrize("status, header", [
    (429, "120"), (503, "120"),
    (429, format_datetime(datetime.fromtimestamp(1_700_000_120, tz=UTC), usegmt=True)),
])
def test_retry_after_120_means_no_attempt_before_120_seconds(session_factory, status, header):
    clock = FakeClock(1_700_000_000_000)
    with Receiver(lambda i, r: Reply(status, {"Retry-After": header}) if i == 0 else Reply(204)) as rx:
        row = one_event(session_factory, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock)  # the schedule alone would retry after ~5 s
        assert deliverer.attempt(row.id) == "pending"
        clock.now = 1_700_000_000_000 + 119_999
        assert deliverer.sweep() == []
        clock.now += 1
        assert deliverer.sweep() == [row.id]
        assert deliverer.attempt(row.id) == "delivered"
        assert len(rx.received) == 2


def test_a_500_with_retry_after_keeps_to_the_schedule(session_factory):
    clock = FakeClock()
    with Receiver(lambda i, r: Reply(500, {"Retry-After": "3600"})) as rx:
        row = one_event(session_factory, rx.url(), clock)
        make_deliverer(session_factory, clock).attempt(row.id)
    assert 4_500 <= reload(session_factory, row).next_attempt_at - clock.now <= 5_500


@pytest.mark.parametrize("header", ["\u00b2", "Mon, 01 Jan 99999999999 00:00:00 GMT", "Mon, 32 Foo 2026 25:61:61"])
def test_a_retry_after_that_is_no_number_or_date_keeps_to_the_schedule_to_its_end(session_factory, header):
    clock = FakeClock()
    with Receiver(lambda i, r: Reply(429, {"Retry-After": header})) as rx:
        row = one_event(session_factory, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock, schedule=(0, 5))
        assert deliverer.attempt(row.id) == "pending"
        assert 4_500 <= reload(session_factory, row).next_attempt_at - clock.now <= 5_500
        clock.now += 60_000
        assert deliverer.sweep() == [row.id] and deliverer.attempt(row.id) == "failed"
        clock.now += 600_000
        assert deliverer.sweep() == [] and len(rx.received) == 2


def test_a_redirect_is_a_failure_and_its_target_receives_nothing(session_factory):
    clock = FakeClock()
    with Receiver() as target, Receiver(lambda i, r: Reply(301, {"Location": target.url()})) as rx:
        row = one_event(session_factory, rx.url(), clock)
        assert make_deliverer(session_factory, clock).attempt(row.id) == "pending"
        assert len(rx.received) == 1 and target.received == []
    fresh = reload(session_factory, row)
    assert fresh.last_status_code == 301 and "not followed" in fresh.last_error


def test_an_attempt_whose_worker_died_is_made_again_after_its_lease_with_the_same_id(session_factory):
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        row = one_event(session_factory, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock, timeout=15)
        assert deliverer._claim(row.id) != "taken"  # claimed, then the process died before any outcome
        clock.now += 15_000 + LEASE_MARGIN_MS - 1
        assert deliverer.sweep() == []
        clock.now += 1
        assert deliverer.sweep() == [row.id]
        assert deliverer.attempt(row.id) == "delivered"
        assert [r.headers["webhook-id"] for r in rx.received] == [row.event_id]
    log = attempts_of(session_factory, row.id)
    assert [(a.number, a.status_code) for a in log] == [(1, None), (2, 204)]
    assert "worker stopped" in log[0].error


def test_a_delivered_newer_event_supersedes_an_older_one_still_retrying(session_factory):
    clock = FakeClock()
    with Receiver(lambda i, r: Reply(500 if i == 0 else 204)) as rx:
        task_id = hooked_task(session_factory, rx.url(), clock)
        events = events_for(session_factory, task_id, WebhookOutbox(0, 0, None, clock), clock)
        deliverer = make_deliverer(session_factory, clock)
        events.transition(status=protocol.SUBMITTED, progress="0%")
        [old] = deliveries(session_factory, task_id)
        assert deliverer.attempt(old.id) == "pending"
        events.transition(status=protocol.SUCCESS, progress="100%")
        new = deliveries(session_factory, task_id)[1]
        assert deliverer.attempt(new.id) == "delivered"
        clock.now += 86_400_000
        assert deliverer.sweep() == []
        assert [r.headers["webhook-sequence"] for r in rx.received] == [str(old.seq), str(new.seq)]
    assert [r.status for r in deliveries(session_factory, task_id)] == ["superseded", "delivered"]


def test_a_short_retry_goes_out_with_a_countdown_and_the_sweep_leaves_it_to_that_message(session_factory):
    clock = FakeClock()
    sent = []
    with Receiver(lambda i, r: Reply(500)) as rx:
        row = one_event(session_factory, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock,
                                   enqueue=lambda i, countdown: sent.append((i, countdown)) or True)
        deliverer.attempt(row.id)
        due = reload(session_factory, row).next_attempt_at
        [(delivery_id, countdown)] = sent
        assert delivery_id == row.id and 4.5 <= countdown <= 5.5
        clock.now = due
        assert deliverer.sweep() == []  # the countdown message is on its way
        clock.now = due + QUEUED_HOLD_MS
        assert deliverer.sweep() == [row.id]  # it never came: the sweep sends it


@pytest.mark.parametrize("env, name", [
    ({"MJQ_WEBHOOK_SECRET": "not-a-secret"}, "MJQ_WEBHOOK_SECRET"),
    ({"MJQ_WEBHOOK_SECRET": "whsec_!!!!"}, "MJQ_WEBHOOK_SECRET"),
    ({"MJQ_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "MJQ_WEBHOOK_SECRET"),  # 5 bytes of key
    ({"MJQ_WEBHOOK_SCHEDULE": "0,five"}, "MJQ_WEBHOOK_SCHEDULE"),
    ({"MJQ_WEBHOOK_SCHEDULE": "0,-5"}, "MJQ_WEBHOOK_SCHEDULE"),
    ({"MJQ_WEBHOOK_TIMEOUT_SECONDS": "0"}, "MJQ_WEBHOOK_TIMEOUT_SECONDS"),
    ({"MJQ_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "MJQ_WEBHOOK_ALLOW_PRIVATE"),
])
def test_a_bad_webhook_setting_stops_with_a_message_naming_it(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_without_a_configured_secret_one_is_generated_once_and_shared(session_factory):
    from workers.webhook_signing import SecretSource, stored_secret

    first = SecretSource(session_factory).key_for(None)
    assert SecretSource(session_factory).key_for(None) == first
    with session_factory() as session:
        secret = stored_secret(session)
    assert secret.startswith("whsec_") and Webhook(secret)._whsecret == first
    assert SecretSource(session_factory, SECRET).key_for(None) != first


def test_a_newer_event_waits_for_an_older_untried_one_and_is_sent_right_after_it(session_factory):
    clock = FakeClock()
    sent = []
    with Receiver() as rx:
        task_id = hooked_task(session_factory, rx.url(), clock)
        events = events_for(session_factory, task_id, WebhookOutbox(0, 0, None, clock), clock)
        events.transition(status=protocol.SUBMITTED, progress="0%")
        events.transition(status=protocol.IN_PROGRESS)
        older, newer = deliveries(session_factory, task_id)
        deliverer = make_deliverer(session_factory, clock, enqueue=lambda i, countdown: sent.append(i) or True)
        assert deliverer.attempt(newer.id) == "waiting"  # its message came first; the older event goes first
        assert deliverer.attempt(older.id) == "delivered" and sent == [newer.id]
        assert deliverer.attempt(newer.id) == "delivered"
        assert [r.headers["webhook-sequence"] for r in rx.received] == [str(older.seq), str(newer.seq)]


def test_several_messages_for_one_delivery_make_one_post(session_factory):
    from concurrent.futures import ThreadPoolExecutor

    with Receiver(lambda i, r: Reply(204, delay=0.3)) as rx:
        row = one_event(session_factory, rx.url(), now_ms)
        deliverer = make_deliverer(session_factory, now_ms)
        with ThreadPoolExecutor(5) as pool:
            outcomes = list(pool.map(deliverer.attempt, [row.id] * 5))
        assert len(rx.received) == 1
    assert outcomes.count("delivered") == 1 and set(outcomes) <= {"delivered", "not due", "taken"}
