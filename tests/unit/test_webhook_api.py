"""The deliveries API (list, redeliver), notifyHook validation at submit, and `mjq webhook-secret`."""
from __future__ import annotations

import pytest

from app.models import WebhookDisabledEndpoint, now_ms
from tests.fakes.webhooks import Receiver, Reply, deliveries, make_deliverer
from tests.unit.conftest import drain
from tests.unit.test_executor import FakeClock, make_executor
from workers import queues
from workers.webhook_outbox import WebhookOutbox
from workers.webhooks import DELIVER


def run_job(client, session_factory, redis, images, hook: str | None, clock, headers=None) -> str:
    """Submit an imagine (with `hook` as notifyHook unless None) as `headers` say, and run it to the end."""
    body = {"prompt": "a fox"} if hook is None else {"prompt": "a fox", "notifyHook": hook}
    task_id = client.post("/mj/submit/imagine", json=body, headers=headers).get_json()["result"]
    executor = make_executor(session_factory, redis, images, clock=clock)
    executor.listeners = [WebhookOutbox(2.0, 0.0, None, clock)]
    executor.execute(int(task_id))
    return task_id


def deliver_due(deliverer) -> None:
    for delivery_id in deliverer.sweep():
        deliverer.attempt(delivery_id)


def test_the_deliveries_of_a_task_are_listed_with_their_attempts(client, session_factory, redis, images):
    clock = FakeClock(now_ms())
    with Receiver(lambda i, r: Reply(500) if i == 0 else Reply(204)) as rx:
        task_id = run_job(client, session_factory, redis, images, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock)
        deliver_due(deliverer)
        clock.now += 6_000
        deliver_due(deliverer)
    listed = client.get(f"/mj/task/{task_id}/deliveries").get_json()
    assert [d["seq"] for d in listed] == sorted(d["seq"] for d in listed)
    first = listed[0]
    assert (first["taskStatus"], first["webhookId"], first["url"]) == ("SUBMITTED", f"msg_{task_id}_{first['seq']}",
                                                                       rx.url())
    assert listed[-1]["taskStatus"] == "SUCCESS" and listed[-1]["status"] == "delivered"
    assert [(a["attempt"], a["statusCode"]) for a in first["attemptLog"]][0] == (1, 500)
    assert all(a["startedAt"] <= a["finishedAt"] for d in listed for a in d["attemptLog"])
    assert set(first) >= {"id", "status", "attempts", "nextAttemptAt", "lastStatusCode", "lastError", "createdAt"}


def test_deliveries_of_an_unknown_task_answer_404_code_3(client):
    for path in ("/mj/task/1795306566370466123/deliveries", "/mj/task/nope/deliveries",
                 "/mj/task/1795306566370466123/deliveries/1/redeliver"):
        answer = client.open(path, method="POST" if path.endswith("redeliver") else "GET")
        assert answer.status_code == 404 and answer.get_json()["code"] == 3


def test_redeliver_rearms_a_delivery_now_with_the_same_webhook_id(client, celery, session_factory, redis, images):
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        task_id = run_job(client, session_factory, redis, images, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock)
        deliver_due(deliverer)
        last = deliveries(session_factory, int(task_id))[-1]
        drain(celery, queues.WEBHOOKS)
        answer = client.post(f"/mj/task/{task_id}/deliveries/{last.id}/redeliver").get_json()
        assert answer["code"] == 1 and answer["result"]["status"] == "pending"
        assert [m["args"] for m in drain(celery, queues.WEBHOOKS) if m["task"] == DELIVER] == [[str(last.id)]]
        clock.now = now_ms()  # the API re-armed it on the real clock
        assert deliverer.attempt(last.id) == "delivered"
        ids = [r.headers["webhook-id"] for r in rx.received]
    assert ids.count(last.event_id) == 2


def test_redelivering_an_older_event_than_one_already_delivered_is_refused(client, session_factory, redis, images):
    clock = FakeClock(now_ms())
    with Receiver(lambda i, r: Reply(500) if i == 0 else Reply(204)) as rx:
        task_id = run_job(client, session_factory, redis, images, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock)
        deliver_due(deliverer)
    first = deliveries(session_factory, int(task_id))[0]
    answer = client.post(f"/mj/task/{task_id}/deliveries/{first.id}/redeliver").get_json()
    assert answer["code"] == 4 and "later event" in answer["description"]


def test_redelivering_to_a_disabled_endpoint_enables_it_again(client, session_factory, redis, images):
    clock = FakeClock(now_ms())
    with Receiver(lambda i, r: Reply(410) if i == 0 else Reply(204)) as rx:
        task_id = run_job(client, session_factory, redis, images, rx.url(), clock)
        deliverer = make_deliverer(session_factory, clock)
        deliver_due(deliverer)
        rows = deliveries(session_factory, int(task_id))
        assert {r.status for r in rows} == {"disabled"}
        last = rows[-1]
        assert client.post(f"/mj/task/{task_id}/deliveries/{last.id}/redeliver").get_json()["code"] == 1
        clock.now = now_ms()  # the API re-armed it on the real clock
        assert deliverer.attempt(last.id) == "delivered"
    with session_factory() as session:
        assert session.get(WebhookDisabledEndpoint, last.endpoint) is None


def test_the_deliveries_api_needs_the_api_secret_when_one_is_set(settings, celery, redis, accounts):
    from dataclasses import replace

    from app import create_app

    locked = create_app(replace(settings, api_secret="S"), celery=celery, redis=redis).test_client()
    assert locked.get("/mj/task/1/deliveries").status_code == 401
    assert locked.get("/mj/task/1/deliveries", headers={"mj-api-secret": "S"}).status_code == 404


@pytest.mark.parametrize("hook, words", [
    ("http://127.0.0.1:9000/h", "domain"), ("http://2130706433/h", "domain"), ("http://0x7f000001/h", "domain"),
    ("http://[::1]/h", "domain"), ("http://169.254.169.254/latest", "domain"), ("ftp://hooks.example.com/h", "http"),
    ("file:///etc/passwd", "http"), ("http://hooks.example.com/" + "a" * 2048, "2048"),
    ("http://user:pw@hooks.example.com/h", "user:password"),
])
def test_a_bad_notify_hook_is_refused_at_submit_naming_the_field(client, hook, words):
    answer = client.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": hook}).get_json()
    assert answer["code"] == 4 and answer["description"].startswith("notifyHook") and words in answer["description"]


def test_a_domain_notify_hook_is_accepted_and_resolved_only_at_delivery(client):
    answer = client.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": "https://hooks.example.com/mj"})
    assert answer.get_json()["code"] == 1


def test_the_cli_prints_the_signing_secret(monkeypatch, capsys, settings):
    from app.cli import main

    monkeypatch.setenv("DATABASE_URL", settings.effective_database_url)
    assert main(["webhook-secret"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["webhook-secret"]) == 0
    assert first.startswith("whsec_") and capsys.readouterr().out.strip() == first
