"""API keys, isolation between keys, plans, rate limits, idempotency and billing."""
from __future__ import annotations

import json
from dataclasses import replace

import fakeredis
import pytest
from sqlalchemy import select, text

from app import create_app
from app.models import Task
from app.models_tenancy import ApiKey, IdempotencyRecord, LedgerEntry
from app.services.plans import DEFAULT_PRICES
from tests.unit.conftest import drain
from tests.unit.test_executor import make_executor
from tests.unit.test_submit_imagine import png_data_url
from workers import queues
from workers.billing import BillingWriter

ADMIN = {"mj-api-secret": "S"}
PLANS = json.dumps({
    "basic": {"maxUnfinished": 3, "modes": ["FAST", "RELAX"], "dailyTasks": 200, "submitsPerMinute": 100},
    "premium": {"maxUnfinished": 50, "modes": ["FAST", "RELAX", "TURBO"], "dailyTasks": 1000,
                "submitsPerMinute": 1000},
    "tiny": {"maxUnfinished": 10, "modes": ["FAST"], "dailyTasks": 2, "submitsPerMinute": 1000},
    "slow": {"maxUnfinished": 10, "modes": ["FAST"], "dailyTasks": 100, "submitsPerMinute": 2},
    "chatty": {"maxUnfinished": 10, "modes": ["FAST"], "dailyTasks": 100, "submitsPerMinute": 1000,
               "requestsPerMinute": 3},
})


@pytest.fixture
def settings(settings):
    return replace(settings, api_secret="S", plans_json=PLANS)


def new_key(client, plan="basic", role="user", **extra) -> dict:
    body = client.post("/mj/admin/keys", json={"name": f"{plan}-{role}", "plan": plan, "role": role, **extra},
                       headers=ADMIN).get_json()
    assert body["code"] == 1, body
    return body["result"]


def auth(key: dict) -> dict:
    return {"Authorization": f"Bearer {key['key']}"}


def submit(client, key, prompt="a fox", path="/mj"):
    return client.post(f"{path}/submit/imagine", json={"prompt": prompt}, headers=auth(key)).get_json()


def test_an_admin_creates_a_key_that_is_shown_once_and_stored_hashed(client, session_factory):
    key = new_key(client, "premium")
    assert key["key"].startswith("mjq_") and len(key["key"]) > 40
    assert set(key) >= {"id", "key", "name", "plan", "role"} and key["role"] == "user"
    listed = client.get("/mj/admin/keys", headers=ADMIN).get_json()["result"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    with session_factory() as s:
        dump = " ".join(str(v) for row in s.execute(text("SELECT * FROM api_keys")) for v in row)
    assert key["key"] not in dump and key["key"][:8] in dump


def test_a_wrong_key_of_the_same_length_and_a_revoked_key_are_refused(client):
    key = new_key(client)
    forged = key["key"][:-1] + ("A" if key["key"][-1] != "A" else "B")
    assert client.get("/mj/task/list", headers={"mj-api-secret": forged}).status_code == 401
    assert client.get("/mj/task/list", headers=auth(key)).status_code == 200
    assert client.delete(f"/mj/admin/keys/{key['id']}", headers=ADMIN).get_json()["code"] == 1
    assert client.get("/mj/task/list", headers=auth(key)).status_code == 401


def test_a_user_key_cannot_use_the_admin_api(client):
    key = new_key(client)
    assert client.post("/mj/admin/keys", json={"name": "x", "plan": "basic"}, headers=auth(key)).status_code == 403
    assert client.get("/mj/admin/stats", headers=auth(key)).status_code == 403


def test_admins_see_the_tasks_of_every_key(client):
    # What another user key sees of them: tests/unit/test_tenancy_isolation.py.
    a = new_key(client, "premium")
    mine = submit(client, a)["result"]
    admin_key = new_key(client, "premium", role="admin")
    for headers in (ADMIN, auth(admin_key)):
        assert client.get(f"/mj/task/{mine}/fetch", headers=headers).status_code == 200
        assert [t["id"] for t in client.get("/mj/task/list", headers=headers).get_json()] == [mine]


def test_a_premium_key_at_its_cap_of_50_is_refused_naming_the_cap_while_another_key_is_accepted(client):
    a, b = new_key(client, "premium"), new_key(client, "premium")
    codes = [submit(client, a, f"fox {i}")["code"] for i in range(50)]
    assert set(codes) <= {1, 22}
    refused = submit(client, a, "one too many")
    assert refused["code"] == 23 and "50 unfinished" in refused["description"] and "premium" in refused["description"]
    assert submit(client, b)["code"] in (1, 22)


def test_a_mode_outside_the_plan_is_refused_with_code_23_naming_the_plan_and_its_modes(client, session_factory):
    basic = new_key(client, "basic")
    reply = submit(client, basic, path="/mj-turbo/mj")
    assert reply["code"] == 23 and reply["result"] is None
    assert reply["description"] == "plan basic allows only FAST, RELAX modes; TURBO is not among them"
    with session_factory() as s:
        assert s.scalars(select(Task)).all() == []
    assert submit(client, basic, path="/mj-relax/mj")["code"] == 1


def test_the_daily_cap_counts_the_tasks_of_the_utc_day(client):
    tiny = new_key(client, "tiny")
    assert [submit(client, tiny, f"x{i}")["code"] for i in range(2)] == [1, 1]
    reply = submit(client, tiny, "third")
    assert reply["code"] == 23 and "per day" in reply["description"]


def test_the_rate_limit_is_shared_by_every_api_process_and_says_when_to_retry(settings, celery, redis, accounts):
    first = create_app(settings, celery=celery, redis=redis).test_client()
    second = create_app(settings, celery=celery, redis=redis).test_client()
    slow = new_key(first, "slow")
    assert submit(first, slow)["code"] == 1 and submit(second, slow)["code"] == 1
    resp = first.post("/mj/submit/imagine", json={"prompt": "third"}, headers=auth(slow))
    assert resp.status_code == 429 and 1 <= int(resp.headers["Retry-After"]) <= 61
    assert resp.get_json()["code"] == 9 and "2 jobs per minute" in resp.get_json()["description"]


def test_every_request_of_a_user_key_counts_against_its_plan_across_api_processes_and_mounts(
        settings, celery, redis, accounts):
    first = create_app(settings, celery=celery, redis=redis).test_client()
    second = create_app(settings, celery=celery, redis=redis).test_client()
    chatty = new_key(first, "chatty")
    task_id = submit(first, chatty)["result"]
    assert second.get(f"/mj-relax/mj/task/{task_id}/fetch", headers=auth(chatty)).status_code == 200
    assert first.get("/mj/task/list", headers=auth(chatty)).status_code == 200
    refused = second.get(f"/mj/task/{task_id}/fetch", headers=auth(chatty))
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 61
    assert refused.get_json()["code"] == 9 and "3 requests per minute" in refused.get_json()["description"]
    assert first.post("/mj/submit/imagine", json={"prompt": "more"}, headers=auth(chatty)).status_code == 429
    assert [t["id"] for t in first.get("/mj/task/list", headers=ADMIN).get_json()] == [task_id]


def test_admins_are_not_held_to_a_request_rate(client):
    admin_key = new_key(client, "chatty", role="admin")
    for headers in (ADMIN, auth(admin_key)):
        assert [client.get("/mj/task/list", headers=headers).status_code for _ in range(5)] == [200] * 5


def test_without_redis_the_request_rate_is_not_enforced(settings, celery, accounts):
    server = fakeredis.FakeServer()
    client = create_app(settings, celery=celery, redis=fakeredis.FakeRedis(server=server)).test_client()
    chatty = new_key(client, "chatty")
    server.connected = False
    assert [client.get("/mj/task/list", headers=auth(chatty)).status_code for _ in range(5)] == [200] * 5


def test_idempotency_key_replays_the_answer_without_a_second_job(client, celery, session_factory):
    key = new_key(client, "premium")
    headers = {**auth(key), "Idempotency-Key": "order-42"}
    one = client.post("/mj/submit/imagine", json={"prompt": "once"}, headers=headers).get_json()
    two = client.post("/mj/submit/imagine", json={"prompt": "once"}, headers=headers).get_json()
    assert one == two and one["code"] == 1
    assert len(drain(celery, queues.FAST)) == 1
    other = client.post("/mj/submit/imagine", json={"prompt": "twice"}, headers=headers)
    assert other.status_code == 422
    with session_factory() as s:
        s.add(IdempotencyRecord(owner=key["id"], key="busy", body_hash="x", status="pending", created_at=0))
        s.commit()
    busy = client.post("/mj/submit/imagine", json={"prompt": "x"}, headers={**auth(key), "Idempotency-Key": "busy"})
    assert busy.status_code in (409, 422)
    retry = {**auth(key), "Idempotency-Key": "fix-me"}
    assert client.post("/mj/submit/imagine", json={}, headers=retry).get_json()["code"] == 4
    fixed = client.post("/mj/submit/imagine", json={"prompt": "fixed"}, headers=retry)
    assert fixed.get_json()["code"] == 1  # a refused request is not remembered


def test_a_submit_that_failed_with_an_internal_error_runs_when_retried_with_its_idempotency_key(
        client, app, celery, session_factory, monkeypatch):
    key = new_key(client, "premium")
    headers = {**auth(key), "Idempotency-Key": "order-7"}
    body = {"prompt": "a fox", "base64Array": [png_data_url()]}

    def disk_full(key: str, data: bytes) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(app.extensions["mjq"].images, "put", disk_full)
    failed = client.post("/mj/submit/imagine", json=body, headers=headers)
    assert failed.status_code == 500 and failed.get_json()["code"] == 9
    with session_factory() as s:  # nothing is left behind: no row, no record, no message, no place in a queue
        assert s.scalars(select(Task)).all() == [] and s.scalars(select(IdempotencyRecord)).all() == []
    assert drain(celery, queues.FAST) == []
    assert [app.extensions["mjq"].scheduler.waiting(a, "fast") for a in ("sim-1", "sim-2")] == [[], []]
    monkeypatch.undo()
    retried = client.post("/mj/submit/imagine", json=body, headers=headers)
    assert retried.status_code == 200 and retried.get_json()["code"] == 1
    assert client.post("/mj/submit/imagine", json=body, headers=headers).get_json() == retried.get_json()
    assert [m["args"][0] for m in drain(celery, queues.FAST)] == [retried.get_json()["result"]]


def test_a_metered_key_needs_the_balance_for_the_job(client):
    poor = new_key(client, "premium", balance=1000)
    reply = submit(client, poor)
    assert reply["code"] == 23 and "balance 1000" in reply["description"] and "14000" in reply["description"]
    assert client.post(f"/mj/admin/keys/{poor['id']}/credit", json={"amount": 20000}, headers=ADMIN
                       ).get_json()["result"]["balance"] == 21000
    assert submit(client, poor)["code"] == 1


def test_success_is_charged_once_and_failure_never(client, celery, session_factory, redis, images):
    key = new_key(client, "premium", balance=100_000)
    ok_id = int(submit(client, key, "a fox")["result"])
    relax_id = int(submit(client, key, "a slow fox", "/mj-relax/mj")["result"])
    bad_id = int(submit(client, key, "a bad fox [sim:queue-full]")["result"])
    executor = make_executor(session_factory, redis, images)
    billing = BillingWriter(DEFAULT_PRICES)
    executor.listeners = [billing]
    executor.execute(ok_id)
    executor.execute(relax_id)
    executor.execute(bad_id)
    with session_factory() as s:
        task = s.get(Task, ok_id)
        # Replaying the writer on the finished task (a retried transition) charges nothing more.
        billing.write_in_transaction(s, task, task.to_json(), task.seq)
        s.commit()
        charges = s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "charge")).all()
        assert sorted((c.task_id, c.amount) for c in charges) == sorted([(ok_id, -14000), (relax_id, -7000)])
        assert s.get(ApiKey, key["id"]).balance == 100_000 - 21000
    usage = client.get("/mj/usage", headers=auth(key)).get_json()["result"]
    assert usage["tokensCharged"] == 21000
    by = {(u["mode"], u["action"]): u for u in usage["byActionMode"]}
    assert by[("FAST", "IMAGINE")]["success"] == 1 and by[("FAST", "IMAGINE")]["failure"] == 1
    stats = client.get("/mj/admin/stats?days=1", headers=ADMIN).get_json()["result"]
    assert {(r["mode"], r["action"], r["success"], r["failure"]) for r in stats} == {
        ("FAST", "IMAGINE", 1, 1), ("RELAX", "IMAGINE", 1, 0)}


def test_open_mode_needs_no_key_but_honours_one(settings, celery, redis, accounts):
    open_app = create_app(replace(settings, api_secret=""), celery=celery, redis=redis).test_client()
    assert open_app.post("/mj/submit/imagine", json={"prompt": "x"}).get_json()["code"] == 1
    key = new_key(create_app(settings, celery=celery, redis=redis).test_client(), "premium")
    mine = submit(open_app, key)["result"]
    assert [t["id"] for t in open_app.get("/mj/task/list", headers=auth(key)).get_json()] == [mine]


def test_the_cli_creates_lists_credits_and_revokes_keys(settings, monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("DATABASE_URL", settings.effective_database_url)
    assert main(["keys", "create", "--name", "shop", "--plan", "vip", "--balance", "5"]) == 0
    out = capsys.readouterr().out
    key_id, key = out.split()[1], out.split("key ")[1].split()[0]
    assert key.startswith("mjq_")
    assert main(["keys", "credit", key_id, "10"]) == 0 and "balance 15" in capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "shop" in listed and key not in listed and "active" in listed
    assert main(["keys", "revoke", key_id]) == 0
    assert main(["keys", "list"]) == 0 and "revoked" in capsys.readouterr().out
    assert main(["keys", "create", "--name", "x", "--plan", "gold"]) == 2
    assert "plan must be one of" in capsys.readouterr().err
