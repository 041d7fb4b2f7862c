"""Acceptance of the discord driver on a real stack against the fake Discord: web, fast and normal
workers, two gateway processes, PostgreSQL and Redis of its own, discord accounts only.

(a) every action of the action walk end to end (the Remix steps on a third account whose user has
Remix mode on); (b) SIGKILL of the gateway holding an account
mid-job: another gateway process takes it over within 30 s and the job completes; (c) a 4004
close disables the account and its queued jobs move to another account or fail with the
reason; none stays SUBMITTED.
"""
from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.e2e.action_walk import STEPS, Walker, walk
from tests.integration.discord_stack import SECRET, DiscordStack, discord_stack
from tests.processes import wait_for

pytestmark = pytest.mark.integration

#: Acceptance: another gateway process must hold a dead holder's account within this, seconds.
TAKEOVER_LIMIT_SECONDS = 30.0
TERMINAL = ("SUCCESS", "FAILURE", "CANCEL")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiscordStack]:
    log_dir = tmp_path_factory.mktemp("discord-logs")
    with discord_stack(log_dir, tmp_path_factory.mktemp("discord-data")) as stack:
        stack.gateway()
        stack.gateway()
        stack.create_account("dc-a")
        stack.create_account("dc-b")
        stack.create_account("dc-remix", remix=True)
        yield stack


def task(stack: DiscordStack, task_id: str) -> dict:
    return stack.api("GET", f"/mj/task/{task_id}/fetch")  # type: ignore[no-any-return]


def imagine(stack: DiscordStack, prompt: str, account_id: str) -> str:
    answer = stack.api("POST", "/mj/submit/imagine", {"prompt": prompt, "accountFilter": {"instanceId": account_id}})
    assert answer["code"] in (1, 22), answer
    return str(answer["result"])


def test_every_action_of_the_walk_runs_end_to_end_on_discord_accounts(stack):
    walker = Walker(stack.base, SECRET, "/mj")
    walk(walker)
    print(f"\ndiscord walk: {len(walker.log)} steps ok in {walker.seconds:.1f} s; Remix steps: {walker.remix_note}")
    assert sorted(walker.names) == sorted(STEPS)
    assert walker.remix_filter == {"instanceId": "dc-remix"}
    ran_on = {task(stack, i)["properties"]["discordInstanceId"] for i in walker.task_ids}
    assert "dc-remix" in ran_on and ran_on <= {"dc-a", "dc-b", "dc-remix"}
    # Every interaction went out once: no job was submitted twice.
    nonces = [p["nonce"] for p in stack.fake.interactions]
    assert len(nonces) == len(set(nonces))


def test_a_killed_gateway_is_replaced_within_30_s_and_the_running_job_still_completes(stack):
    stack.fake.bot.slow_seconds = 14.0
    task_id = imagine(stack, "a slow fox [fake:slow]", "dc-a")
    wait_for(lambda: task(stack, task_id)["status"] == "IN_PROGRESS", 30, "the slow job to start")
    holder = stack.holder_pid("dc-a")
    victim = next(p for p in stack.gateways if p.pid == holder)
    token = stack.users["dc-a"].token
    resumes_before = stack.fake.resumes
    killed_at = time.monotonic()
    victim.signal_group(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    wait_for(lambda: stack.fake.connected(token) and stack.holder_pid("dc-a") not in (None, holder), 60,
             "another gateway to hold dc-a")
    takeover = time.monotonic() - killed_at
    print(f"\ngateway takeover: {takeover:.1f} s after SIGKILL (lease {stack.env['MJQ_GATEWAY_LEASE_SECONDS']} s); "
          f"resumed the session: {stack.fake.resumes > resumes_before}")
    assert takeover < TAKEOVER_LIMIT_SECONDS
    done = wait_for(lambda: task(stack, task_id)["status"] in TERMINAL and task(stack, task_id), 60,
                    "the job to finish")
    assert done["status"] == "SUCCESS", done["failReason"]  # type: ignore[index]
    assert stack.fake.interaction_count(done["properties"]["nonce"]) == 1  # type: ignore[index]
    stack.gateways.remove(victim)
    stack.gateway()  # two gateways again for what follows


def test_a_4004_close_disables_the_account_and_its_queued_jobs_move_or_fail_none_stays_submitted(stack):
    stack.fake.bot.slow_seconds = 30.0
    assert stack.api("PUT", "/mj/account/dc-a/update", {"fastConcurrency": 1})["code"] == 1
    running = imagine(stack, "a long fox [fake:slow]", "dc-a")
    wait_for(lambda: task(stack, running)["status"] == "IN_PROGRESS", 30, "the first job to start")
    queued = [imagine(stack, f"a queued fox {i}", "dc-a") for i in range(3)]
    assert {task(stack, i)["status"] for i in queued} == {"NOT_START"}
    stack.fake.close(stack.users["dc-a"].token, 4004, "Authentication failed")

    account = wait_for(lambda: (a := stack.api("GET", "/mj/account/dc-a/fetch")["result"]) and not a["enable"] and a,
                       30, "dc-a to be disabled")
    assert "4004" in account["disabledReason"] and "Authentication failed" in account["disabledReason"]  # type: ignore[index]
    ids = [running, *queued]
    finals = wait_for(lambda: all(task(stack, i)["status"] in TERMINAL for i in ids) and [task(stack, i) for i in ids],
                      90, "every job of dc-a to end")
    first, *rest = finals  # type: ignore[misc]
    print(f"\n4004: running job {first['status']} ({first['failReason']}); queued jobs: "
          + ", ".join(f"{t['status']} on {t['properties']['discordInstanceId']}" for t in rest))
    assert first["status"] == "FAILURE" and "4004" in first["failReason"]
    for t in rest:
        moved = t["status"] == "SUCCESS" and t["properties"]["discordInstanceId"] in ("dc-b", "dc-remix")
        assert moved or (t["status"] == "FAILURE" and "4004" in t["failReason"]), t
    assert any(t["status"] == "SUCCESS" for t in rest)
    assert not any(task(stack, i)["status"] == "SUBMITTED" for i in ids)
