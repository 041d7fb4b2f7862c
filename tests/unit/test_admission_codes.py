"""Submit answers while a pool fills up: code 1, then 22 with the exact `numberOfQueues`, then 23.

Nothing consumes the memory broker here, so no job ever takes its slot and every position
is deterministic: an account with L slots and a queue of Q answers L × code 1, then code 22
with L, L+1, … L+Q-1 tasks ahead, then code 23.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from app import protocol
from app.models import Account, Task, now_ms
from tests.unit.conftest import drain
from workers import queues


def add_account(session_factory, account_id: str, fast_slots: int, queue_size: int,
                modes: tuple[str, ...] = ("FAST", "TURBO", "RELAX"), remix: bool = False) -> None:
    now = now_ms()
    with session_factory() as session:
        session.add(Account(
            id=account_id, name=account_id, driver="simulator", settings={}, modes=list(modes),
            fast_concurrency=fast_slots, relax_concurrency=1, queue_size=queue_size, weight=1, remix=remix,
            bot_types=list(protocol.BOT_TYPES), timeout_minutes=5, enable=True, created_at=now, updated_at=now,
        ))
        session.commit()


def submit(client, n: int, account_filter: dict[str, Any] | None = None, path: str = "/mj-fast/mj",
           prompt: str = "a queue test") -> list[dict[str, Any]]:
    body: dict[str, Any] = {"prompt": prompt}
    if account_filter:
        body["accountFilter"] = account_filter
    return [client.post(f"{path}/submit/imagine", json=body).get_json() for _ in range(n)]


def answer(body: dict[str, Any]) -> tuple[int, int | None]:
    return body["code"], body.get("properties", {}).get("numberOfQueues")


def count_tasks(session_factory) -> int:
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Task)) or 0)


def test_an_account_with_2_slots_and_a_queue_of_3_answers_1_1_then_22_with_2_3_4_ahead_then_23(
        client, celery, session_factory):
    add_account(session_factory, "small", fast_slots=2, queue_size=3)
    bodies = submit(client, 7, {"instanceId": "small"})
    assert [answer(b) for b in bodies] == [(1, None), (1, None), (22, 2), (22, 3), (22, 4), (23, None), (23, None)]
    assert bodies[2]["description"] == "In queue, there are 2 tasks ahead"
    assert all(b["properties"]["discordInstanceId"] == "small" for b in bodies[:5])
    assert "queue is full" in bodies[5]["description"] and bodies[5]["result"] is None
    # A refused submit leaves no row and no message behind.
    assert count_tasks(session_factory) == 5
    assert sorted(m["args"][0] for m in drain(celery, queues.FAST)) == sorted(b["result"] for b in bodies[:5])


def test_a_pool_of_two_accounts_fills_to_the_sum_of_slots_and_queues_and_every_position_is_exact(
        client, session_factory):
    with session_factory() as session:  # only the two accounts below are eligible
        session.execute(update(Account).values(enable=False))
        session.commit()
    add_account(session_factory, "two-slots", fast_slots=2, queue_size=3)
    add_account(session_factory, "one-slot", fast_slots=1, queue_size=2)
    capacity = (2 + 3) + (1 + 2)
    bodies = submit(client, capacity + 2)
    accepted, refused = bodies[:capacity], bodies[capacity:]
    assert [b["code"] for b in refused] == [23, 23]
    slots = {"two-slots": 2, "one-slot": 1}
    before: dict[str, int] = {"two-slots": 0, "one-slot": 0}
    for body in accepted:
        account = body["properties"]["discordInstanceId"]
        ahead = before[account]
        expected = (1, None) if ahead < slots[account] else (22, ahead)
        assert answer(body) == expected, (account, body)
        before[account] += 1
    assert before == {"two-slots": 5, "one-slot": 3}


def test_a_cancelled_waiting_task_frees_its_place_and_the_next_submit_counts_exactly_the_tasks_left(
        client, session_factory):
    add_account(session_factory, "small", fast_slots=2, queue_size=3)
    bodies = submit(client, 6, {"instanceId": "small"})
    assert [b["code"] for b in bodies] == [1, 1, 22, 22, 22, 23]
    cancelled = client.post(f"/mj/task/{bodies[2]['result']}/cancel").get_json()
    assert cancelled["code"] == 1
    # Tasks 1, 2, 4 and 5 are still ahead; the queue of 3 behind the 2 slots is full again after it.
    assert [answer(b) for b in submit(client, 2, {"instanceId": "small"})] == [(22, 4), (23, None)]


def only(session_factory, *accounts: tuple[str, tuple[str, ...], bool]) -> None:
    """Disable the seeded accounts and add these (id, modes, remix), each with 4 fast slots and a queue of 10."""
    with session_factory() as session:
        session.execute(update(Account).values(enable=False))
        session.commit()
    for account_id, modes, remix in accounts:
        add_account(session_factory, account_id, fast_slots=4, queue_size=10, modes=modes, remix=remix)


def placed(session_factory, bodies: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(account, mode, queue) of each accepted task, as stored."""
    with session_factory() as session:
        return [(t.account_id, t.mode, t.queue) for t in (session.get(Task, int(b["result"])) for b in bodies)]


def test_account_filter_modes_is_an_ordered_preference_among_the_accounts_that_support_each_mode(
        client, session_factory):
    only(session_factory, ("fast-only", ("FAST",), False), ("relax-only", ("RELAX",), False))
    assert placed(session_factory, submit(client, 2, {"modes": ["RELAX"]}, path="/mj")) == [
        ("relax-only", "RELAX", queues.NORMAL)] * 2
    # No account runs TURBO, so the next mode in the list is taken.
    assert placed(session_factory, submit(client, 2, {"modes": ["TURBO", "FAST"]}, path="/mj")) == [
        ("fast-only", "FAST", queues.FAST)] * 2
    none = submit(client, 1, {"modes": ["TURBO"]}, path="/mj")[0]
    assert none["code"] == 3 and "TURBO" in none["description"]


def test_a_mode_prefix_or_flag_outside_account_filter_modes_is_code_4_naming_both_and_writes_nothing(
        client, celery, session_factory):
    by_prefix = submit(client, 1, {"modes": ["FAST", "TURBO"]}, path="/mj-relax/mj")[0]
    assert by_prefix["code"] == 4 and by_prefix["description"] == (
        "accountFilter.modes allows only FAST, TURBO, but the path prefix asks for RELAX")
    by_flag = submit(client, 1, {"modes": ["RELAX"]}, path="/mj", prompt="a fox --turbo")[0]
    assert by_flag["code"] == 4 and by_flag["description"] == (
        "accountFilter.modes allows only RELAX, but the prompt's --turbo flag asks for TURBO")
    assert count_tasks(session_factory) == 0 and drain(celery, queues.FAST) + drain(celery, queues.NORMAL) == []
    agreeing = submit(client, 1, {"modes": ["FAST", "RELAX"]}, path="/mj", prompt="a fox --relax")
    assert [(mode, queue) for _account, mode, queue in placed(session_factory, agreeing)] == [("RELAX", queues.NORMAL)]


def test_account_filter_remix_picks_only_accounts_whose_remix_matches(client, session_factory):
    only(session_factory, ("remix", ("FAST",), True), ("plain", ("FAST",), False))
    # Four at a time: without the filter, the least busy account would take every other one.
    assert {a for a, _m, _q in placed(session_factory, submit(client, 4, {"remix": True}))} == {"remix"}
    assert {a for a, _m, _q in placed(session_factory, submit(client, 4, {"remix": False}))} == {"plain"}
    assert {a for a, _m, _q in placed(session_factory, submit(client, 4))} == {"remix", "plain"}
