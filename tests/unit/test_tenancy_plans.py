"""The plans and prices mjq ships with (no MJQ_PLANS, no MJQ_PRICES), and how MJQ_PLANS is read."""
from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from app.models import Task
from app.services.plans import DEFAULT_PLANS, plans_from_json, price, prices_from_json
from config.errors import ConfigError
from tests.unit.conftest import drain
from tests.unit.test_executor import make_executor
from tests.unit.test_submit_imagine import png_data_url
from tests.unit.test_tenancy import auth, new_key, submit
from workers import queues


@pytest.fixture
def settings(settings):
    return replace(settings, api_secret="S", plans_json="", prices_json="")


@pytest.mark.parametrize(("plan", "cap"), [("basic", 3), ("vip", 20), ("premium", 50)])
def test_each_default_plan_caps_unfinished_tasks_with_code_23_naming_the_cap(plan, cap, client, session_factory):
    key = new_key(client, plan)
    assert {submit(client, key, f"fox {i}")["code"] for i in range(cap)} <= {1, 22}
    refused = submit(client, key, "one too many")
    assert refused["code"] == 23 and refused["result"] is None
    assert refused["description"].startswith(f"plan {plan} allows {cap} unfinished tasks at once")
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == cap


BIG = ("IMAGINE", "VARIATION", "ZOOM", "PAN", "BLEND")
SMALL = ("UPSCALE", "DESCRIBE")


@pytest.mark.parametrize(("action", "fast", "relax"), [*((a, 14000, 7000) for a in BIG),
                                                       *((a, 3500, 1750) for a in SMALL)])
def test_the_default_prices_in_tokens_with_turbo_at_twice_fast(action, fast, relax):
    prices = prices_from_json("")
    assert (price(prices, action, "FAST"), price(prices, action, "RELAX"), price(prices, action, "TURBO")) == (
        fast, relax, 2 * fast)


def test_a_vip_key_with_27999_tokens_may_imagine_in_fast_or_relax_but_not_in_turbo(client):
    key = new_key(client, "vip", balance=27999)
    turbo = submit(client, key, path="/mj-turbo/mj")
    assert turbo["code"] == 23 and "28000 tokens" in turbo["description"]
    assert submit(client, key, path="/mj-fast/mj")["code"] == 1
    assert submit(client, key, path="/mj-relax/mj")["code"] == 1


@pytest.mark.parametrize("plan", sorted(DEFAULT_PLANS))
def test_polling_fetch_every_second_for_each_unfinished_task_stays_under_the_default_request_rate(plan):
    limits = plans_from_json("")[plan]
    assert limits.requests_per_minute is not None
    assert limits.max_unfinished * 60 + limits.submits_per_minute <= limits.requests_per_minute


def test_mjq_plans_reads_requests_per_minute_and_a_plan_without_it_limits_only_its_submits():
    plans = plans_from_json('{"shop": {"maxUnfinished": 5, "modes": ["fast"], "dailyTasks": 9, '
                            '"submitsPerMinute": 10, "requestsPerMinute": 90}, '
                            '"legacy": {"maxUnfinished": 5, "modes": ["FAST"], "dailyTasks": 9, '
                            '"submitsPerMinute": 10}}')
    assert (plans["shop"].modes, plans["shop"].requests_per_minute) == (("FAST",), 90)
    assert plans["legacy"].requests_per_minute is None


@pytest.mark.parametrize("bad", ['"many"', "-1", "2.5", "true"])
def test_a_bad_requests_per_minute_in_mjq_plans_fails_at_start_naming_the_variable_and_field(bad):
    raw = ('{"shop": {"maxUnfinished": 5, "modes": ["FAST"], "dailyTasks": 9, "submitsPerMinute": 10, '
           f'"requestsPerMinute": {bad}}}}}')
    with pytest.raises(ConfigError, match="MJQ_PLANS") as caught:
        plans_from_json(raw)
    assert f"requestsPerMinute must be a whole number >= 0, not {bad}" in str(caught.value)


def test_imagine_all_reaching_the_cap_part_way_answers_the_tasks_it_made_and_a_retry_makes_no_more(
        client, celery, session_factory, redis, images):
    key = new_key(client, "basic")  # 3 unfinished tasks at once
    headers = {**auth(key), "Idempotency-Key": "imagine-all-1"}
    described = client.post("/mj/submit/describe", json={"base64": png_data_url((64, 64))}, headers=auth(key))
    executor = make_executor(session_factory, redis, images)
    for queue in (queues.FAST, queues.NORMAL):
        for msg in drain(celery, queue):
            executor.execute(int(msg["args"][0]))
    parent = client.get(f"/mj/task/{described.get_json()['result']}/fetch", headers=auth(key)).get_json()
    assert parent["status"] == "SUCCESS" and len(parent["properties"]["prompts"]) == 4
    body = {"taskId": parent["id"], "customId": "MJ::Job::PicReader::all"}

    answer = client.post("/mj/submit/action", json=body, headers=headers).get_json()
    made = [str(t) for t in children(session_factory, parent["id"])]
    assert answer["code"] == 1 and answer["properties"]["taskIds"] == made and len(made) == 3
    assert answer["result"] == made[0] and answer["description"].startswith(
        "Submit success for 3 of 4 prompts (one task each); prompt 4 was refused: plan basic allows 3 unfinished")
    assert sorted(m["args"][0] for q in (queues.FAST, queues.NORMAL) for m in drain(celery, q)) == sorted(made)

    assert client.post("/mj/submit/action", json=body, headers=headers).get_json() == answer
    assert [str(t) for t in children(session_factory, parent["id"])] == made


def children(session_factory, parent_id: str) -> list[int]:
    with session_factory() as s:
        return list(s.scalars(select(Task.id).where(Task.parent_id == int(parent_id)).order_by(Task.submit_time,
                                                                                                Task.id)))
