"""Account slots: exact admission codes, FIFO grants, leases that expire, fencing, rules."""
from __future__ import annotations

import fakeredis
import pytest

from workers.scheduler import Candidate, LeaseLost, QueueFull, Scheduler, WaitTimeout


def fresh_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sched(clock):
    s = Scheduler(fresh_redis(), lease_seconds=30, clock=clock, rand=lambda: 0.0, running_jobs=lambda: 1)
    s.redis.set("mjq:sched:epoch", 1)  # Redis has been up all along in these tests
    return s


def admit_many(sched, n, candidates, start=1):
    return [sched.admit(candidates, "fast", t, 1000 + t) for t in range(start, start + n)]


def test_codes_are_1_while_a_slot_is_free_then_22_with_the_exact_count_ahead_then_23(sched):
    one = [Candidate("a", limit=2, queue_size=2)]
    answers = [(a.code, a.ahead) for a in admit_many(sched, 4, one)]
    assert answers == [(1, 0), (1, 1), (22, 2), (22, 3)]
    with pytest.raises(QueueFull):
        sched.admit(one, "fast", 99, 2000)
    # Two start; the two others still fill the queue of two.
    first, _ = sched.try_acquire("a", "fast", 1, 2, 1001)
    assert first and sched.try_acquire("a", "fast", 2, 2, 1002)[0]
    with pytest.raises(QueueFull):
        sched.admit(one, "fast", 5, 1005)
    # One finishes: a place opens, and the newcomer has exactly two tasks ahead of it.
    sched.release(first)
    assert (sched.admit(one, "fast", 5, 1005).code, sched.waiting("a", "fast")) == (22, [3, 4, 5])


def test_slots_are_granted_in_submit_order(sched):
    one = [Candidate("a", limit=1, queue_size=10)]
    admit_many(sched, 3, one)
    assert sched.try_acquire("a", "fast", 3, 1, 1003)[0] is None  # not its turn
    first, _ = sched.try_acquire("a", "fast", 1, 1, 1001)
    assert first is not None and sched.try_acquire("a", "fast", 2, 1, 1002)[0] is None
    sched.release(first)
    assert sched.redis.lpop("mjq:sched:wake:2") is not None  # the next in line is woken, not polled
    assert sched.try_acquire("a", "fast", 3, 1, 1003)[0] is None
    assert sched.try_acquire("a", "fast", 2, 1, 1002)[0] is not None


def test_fast_and_relax_slots_are_separate(sched):
    for pool in ("fast", "relax"):
        sched.admit([Candidate("a", 1, 5)], pool, 1 if pool == "fast" else 2, 1000)
    assert sched.try_acquire("a", "fast", 1, 1, 1000)[0] and sched.try_acquire("a", "relax", 2, 1, 1000)[0]


def test_an_expired_lease_frees_the_slot_and_the_old_holder_can_no_longer_act(sched, clock):
    one = [Candidate("a", 1, 5)]
    admit_many(sched, 2, one)
    old, _ = sched.try_acquire("a", "fast", 1, 1, 1001)
    lease, retry_ms = sched.try_acquire("a", "fast", 2, 1, 1002)
    assert lease is None and retry_ms == 30_000  # worth checking again exactly when the lease runs out
    clock.now += 30_001
    new, _ = sched.try_acquire("a", "fast", 2, 1, 1002)
    assert new is not None and new.token > old.token
    with pytest.raises(LeaseLost):
        sched.check(old)
    assert sched.renew(old) is False
    sched.check(new)


def test_a_live_holder_keeps_its_slot_by_renewing(sched, clock):
    admit_many(sched, 2, [Candidate("a", 1, 5)])
    lease, _ = sched.try_acquire("a", "fast", 1, 1, 1001)
    for _ in range(5):
        clock.now += 20_000
        assert sched.renew(lease)
    assert sched.try_acquire("a", "fast", 2, 1, 1002)[0] is None


def test_a_new_redis_grants_at_once_when_no_job_is_running(clock):
    sched = Scheduler(fresh_redis(), clock=clock, running_jobs=lambda: 0)
    sched.admit([Candidate("a", 1, 5)], "fast", 1, 1)
    assert sched.try_acquire("a", "fast", 1, 1, 1)[0] is not None


def test_after_redis_lost_everything_no_slot_is_granted_for_one_lease_ttl(sched, clock):
    admit_many(sched, 1, [Candidate("a", 1, 5)])
    running, _ = sched.try_acquire("a", "fast", 1, 1, 1001)
    sched.redis.flushdb()
    lease, wait_ms = sched.try_acquire("a", "fast", 2, 1, 1002)
    assert lease is None and 29_000 < wait_ms <= 30_000  # fakeredis counts the TTL down in real time
    assert sched.renew(running)  # the live holder registers again during the warm-up
    clock.now += 20_000
    assert sched.renew(running)
    clock.now += 10_001
    sched.redis.delete("mjq:sched:warmup")  # fakeredis does not expire keys on a fake clock
    assert sched.try_acquire("a", "fast", 2, 1, 1002)[0] is None  # the limit still holds
    sched.release(running)
    assert sched.try_acquire("a", "fast", 2, 1, 1002)[0] is not None


def test_acquire_blocks_on_its_wake_list_and_gives_up_after_the_wait_limit(sched):
    admit_many(sched, 2, [Candidate("a", 1, 5)])
    sched.try_acquire("a", "fast", 1, 1, 1001)
    blocked_on = []
    with pytest.raises(WaitTimeout):
        sched.acquire("a", "fast", 2, 1, 1002, wait_seconds=0.3,
                      sleep_until_woken=lambda key, seconds: blocked_on.append((key, seconds)))
    assert blocked_on and all(key == "mjq:sched:wake:2" for key, _ in blocked_on)
    assert sched.waiting("a", "fast") == []  # a job that gave up leaves the queue


def test_evict_frees_a_timed_out_jobs_slot(sched):
    admit_many(sched, 2, [Candidate("a", 1, 5)])
    sched.try_acquire("a", "fast", 1, 1, 1001)
    sched.evict("a", "fast", 1, 1)
    assert sched.try_acquire("a", "fast", 2, 1, 1002)[0] is not None


def test_best_wait_idle_prefers_idle_capacity_and_round_robin_alternates(clock):
    redis = fresh_redis()
    two = [Candidate("a", 1, 5), Candidate("b", 2, 5)]
    best = Scheduler(redis, clock=clock, rand=lambda: 0.0)
    assert [best.admit(two, "fast", t, t).account_id for t in (1, 2, 3)] == ["a", "b", "b"]
    rr = Scheduler(fresh_redis(), rule="RoundRobin", clock=clock)
    assert [rr.admit(two, "fast", t, t).account_id for t in (1, 2, 3, 4)] == ["a", "b", "a", "b"]


def test_weight_and_random_rules_pick_by_the_random_draw(clock):
    two = [Candidate("a", 5, 5, weight=1), Candidate("b", 5, 5, weight=3)]
    assert Scheduler(fresh_redis(), rule="Weight", clock=clock, rand=lambda: 0.2).admit(
        two, "fast", 1, 1).account_id == "a"
    assert Scheduler(fresh_redis(), rule="Weight", clock=clock, rand=lambda: 0.3).admit(
        two, "fast", 1, 1).account_id == "b"
    assert Scheduler(fresh_redis(), rule="Random", clock=clock, rand=lambda: 0.99).admit(
        two, "fast", 1, 1).account_id == "b"
