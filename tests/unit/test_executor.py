"""Running jobs with the executor and the simulator, without Celery."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from app import protocol
from app.models import Task
from workers.drivers.base import UpstreamError
from workers.drivers.simulator import SUBMISSIONS_KEY, SimulatorDriver
from workers.events import ClaimLost, TaskEvents
from workers.executor import DONE, FAILED, LOST, MAX_ATTEMPTS, SKIPPED, Executor


class FakeClock:
    """Milliseconds that move only when the code under test sleeps."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = start_ms
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += int(seconds * 1000)


def submit(client, prompt="a red fox --ar 16:9", path="/mj") -> int:
    return int(client.post(f"{path}/submit/imagine", json={"prompt": prompt}).get_json()["result"])


def make_executor(session_factory, redis, images, seconds=0.0, clock=None, worker="fast@test/1"):
    clock = clock or FakeClock()
    driver = SimulatorDriver(images, seconds, redis, clock=clock, sleep=clock.sleep)
    return Executor(session_factory, redis, {"simulator": driver}, worker, clock=clock)


def test_an_imagine_job_ends_in_success_with_a_16_9_grid_and_nine_buttons(client, session_factory, redis, images):
    task_id = submit(client)
    assert make_executor(session_factory, redis, images).execute(task_id) == DONE
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    assert (task["status"], task["progress"], task["failReason"]) == ("SUCCESS", "100%", None)
    assert task["startTime"] <= task["finishTime"]
    key = task["imageUrl"].split("/mj/image/", 1)[1]
    img = Image.open(io.BytesIO(client.get(f"/mj/image/{key}").data))
    assert img.format == "PNG" and abs(img.width / img.height - 16 / 9) < 0.01 and img.height >= 1024
    h = task["properties"]["messageHash"]
    assert [b["customId"] for b in task["buttons"]] == [
        *(f"MJ::JOB::upsample::{i}::{h}" for i in range(1, 5)), f"MJ::JOB::reroll::0::{h}::SOLO",
        *(f"MJ::JOB::variation::{i}::{h}" for i in range(1, 5))]
    assert [b["label"] for b in task["buttons"]] == ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]
    assert task["buttons"][4]["emoji"] == "🔄"
    assert all(isinstance(b["label"], str) and isinstance(b["emoji"], str) for b in task["buttons"])
    assert task["properties"]["finalPrompt"] == "a red fox --ar 16:9"


def test_every_transition_is_published_with_a_rising_sequence(client, session_factory, redis, images):
    task_id = submit(client)
    pubsub = redis.pubsub()
    pubsub.subscribe(f"mjq:task:{task_id}")
    pubsub.get_message(timeout=1)
    make_executor(session_factory, redis, images).execute(task_id)
    events = []
    while (msg := pubsub.get_message(timeout=0.1)) is not None:
        events.append(json.loads(msg["data"]))
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    statuses = [(e["task"]["status"], e["task"]["progress"]) for e in events]
    assert statuses[0] == ("SUBMITTED", "0%")
    assert ("IN_PROGRESS", "15%") in statuses and ("IN_PROGRESS", "93%") in statuses
    assert statuses[-1] == ("SUCCESS", "100%")
    progress = [int(p[:-1]) for s, p in statuses if s == "IN_PROGRESS" and p and p.endswith("%")]
    assert progress == sorted(progress)


def test_the_simulated_job_takes_its_configured_time_with_previews(client, session_factory, redis, images):
    task_id = submit(client)
    clock = FakeClock()
    start = clock.now
    seen = []
    executor = make_executor(session_factory, redis, images, seconds=6.0, clock=clock)
    executor.listeners = [lambda data, seq: seen.append((clock.now - start, data["status"], data["progress"],
                                                         data["imageUrl"]))]
    executor.execute(task_id)
    assert seen[-1][0] == 6000 and seen[-1][1] == "SUCCESS"
    previews = [s for s in seen if s[1] == "IN_PROGRESS" and s[2] not in (None, "0%")]
    assert [p[2] for p in previews] == ["15%", "31%", "46%", "62%", "78%", "93%"]
    assert all(p[3] and p[3].endswith(".webp") for p in previews)
    assert [p[0] for p in previews] == sorted(p[0] for p in previews) and previews[0][0] > 0


def test_a_redelivered_job_resumes_without_a_second_upstream_submission(client, session_factory, redis, images):
    task_id = submit(client)
    clock = FakeClock()

    class Crash(BaseException):
        pass

    first = make_executor(session_factory, redis, images, seconds=6.0, clock=clock)
    original = first.drivers["simulator"].follow

    def dying_follow(job, ref, reporter):
        class Dying:
            def started(self, properties=None):
                reporter.started(properties)

            def progress(self, percent, url, properties=None):
                reporter.progress(percent, url, properties)
                if percent == 46:
                    raise Crash()

            def succeeded(self, *a, **k):
                reporter.succeeded(*a, **k)
        original(job, ref, Dying())

    first.drivers["simulator"].follow = dying_follow
    with pytest.raises(Crash):
        first.execute(task_id)
    clock.now += 10_000  # the redelivery arrives after the job would have ended upstream
    second = make_executor(session_factory, redis, images, seconds=6.0, clock=clock, worker="fast@test/2")
    assert second.execute(task_id) == DONE
    with session_factory() as s:
        task = s.get(Task, task_id)
        assert task.status == "SUCCESS" and task.attempt == 2 and task.claimed_by == "fast@test/2"
        nonce = task.properties["nonce"]
    assert int(redis.hget(SUBMISSIONS_KEY, nonce)) == 1


def test_a_worker_that_lost_its_claim_cannot_write(client, session_factory, redis):
    task_id = submit(client)
    old = TaskEvents(session_factory, redis, task_id, attempt=1)
    with session_factory() as s:
        s.get(Task, task_id).attempt = 2  # another execution claimed the job
        s.commit()
    with pytest.raises(ClaimLost):
        old.transition(status="IN_PROGRESS", progress="50%")
    with session_factory() as s:
        assert s.get(Task, task_id).progress is None


def test_a_cancel_between_two_reports_of_a_running_job_stops_its_next_write(client, session_factory, redis):
    task_id = submit(client)
    worker = TaskEvents(session_factory, redis, task_id, attempt=0)
    worker.transition(status="IN_PROGRESS", progress="15%")  # the worker now starts from what it wrote
    TaskEvents(session_factory, redis, task_id, attempt=None).transition(status="CANCEL", failReason="cancelled")
    with pytest.raises(ClaimLost):
        worker.transition(status="IN_PROGRESS", progress="46%")
    with session_factory() as s:
        task = s.get(Task, task_id)
        assert (task.status, task.progress, task.fail_reason) == ("CANCEL", "15%", "cancelled")


def test_a_cancel_right_after_the_claim_stops_the_job_before_it_reaches_the_upstream(
        client, session_factory, redis, images, monkeypatch):
    import workers.executor as executor_module

    task_id = submit(client)
    claimed = executor_module.claim

    def claim_then_cancel(*args, **kwargs):
        attempt = claimed(*args, **kwargs)  # the execution now holds the row it read before claiming
        TaskEvents(session_factory, redis, task_id, attempt=None).transition(status="CANCEL", failReason="cancelled")
        return attempt

    monkeypatch.setattr(executor_module, "claim", claim_then_cancel)
    executor = make_executor(session_factory, redis, images)
    assert executor.execute(task_id) == LOST
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    assert (task["status"], task["failReason"]) == ("CANCEL", "cancelled")
    assert redis.hlen(SUBMISSIONS_KEY) == 0  # never submitted upstream


def test_a_report_after_another_writer_keeps_that_writers_properties(client, session_factory, redis):
    task_id = submit(client)
    worker = TaskEvents(session_factory, redis, task_id, attempt=0)
    worker.transition(properties={"progressMessageId": "m1"}, status="IN_PROGRESS")
    TaskEvents(session_factory, redis, task_id, attempt=None).transition(properties={"movedFrom": ["sim-2"]})
    data = worker.transition(properties={"messageHash": "h"}, progress="46%")
    with session_factory() as s:
        task = s.get(Task, task_id)
        expected = {"progressMessageId": "m1", "movedFrom": ["sim-2"], "messageHash": "h"}
        assert expected.items() <= task.properties.items()
        assert task.seq == 3 and data["progress"] == "46%" and data["properties"] == task.to_json()["properties"]


def test_a_terminal_task_is_never_written_again(client, session_factory, redis, images):
    task_id = submit(client)
    make_executor(session_factory, redis, images).execute(task_id)
    assert make_executor(session_factory, redis, images).execute(task_id) == SKIPPED
    with session_factory() as s:
        task = s.get(Task, task_id)
        with pytest.raises(ClaimLost):
            TaskEvents(session_factory, redis, task_id, task.attempt).transition(status="FAILURE")


def test_a_job_that_keeps_killing_its_worker_fails_with_a_clear_reason(client, session_factory, redis, images):
    task_id = submit(client)
    with session_factory() as s:
        s.get(Task, task_id).attempt = MAX_ATTEMPTS
        s.commit()
    assert make_executor(session_factory, redis, images).execute(task_id) == FAILED
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    assert task["status"] == "FAILURE" and "3 times" in task["failReason"] and task["finishTime"]


def test_an_upstream_error_becomes_the_fail_reason(client, session_factory, redis, images):
    task_id = submit(client)
    executor = make_executor(session_factory, redis, images)

    def refuse(job):
        raise UpstreamError("[Banned prompt detected] try another")

    executor.drivers["simulator"].submit = refuse
    assert executor.execute(task_id) == FAILED
    task = client.get(f"/mj/task/{task_id}/fetch").get_json()
    assert (task["status"], task["failReason"], task["progress"]) == ("FAILURE", "[Banned prompt detected] try another",
                                                                      "")


def test_a_disabled_account_fails_the_job_instead_of_hanging(client, session_factory, redis, images):
    from app.models import Account

    task_id = submit(client)
    with session_factory() as s:
        account = s.get(Account, s.get(Task, task_id).account_id)
        account.enable = False
        s.commit()
    assert make_executor(session_factory, redis, images).execute(task_id) == FAILED


def test_two_executions_racing_for_one_job_run_it_once(client, session_factory, redis, images):
    task_id = submit(client)
    a = make_executor(session_factory, redis, images, worker="a")
    b = make_executor(session_factory, redis, images, worker="b")
    results = []
    a.drivers["simulator"].follow = (lambda orig: lambda job, ref, rep: (results.append(b.execute(task_id)),
                                                                         orig(job, ref, rep)))(
        a.drivers["simulator"].follow)
    assert a.execute(task_id) in (DONE, LOST)
    assert results == [SKIPPED] or results == [DONE]
    with session_factory() as s:
        assert s.get(Task, task_id).status == protocol.SUCCESS


def test_the_simulator_can_report_fewer_progress_steps(client, session_factory, redis, images):
    task_id = submit(client)
    executor = make_executor(session_factory, redis, images)
    executor.drivers["simulator"] = SimulatorDriver(images, 0.0, redis, progress_steps=3)
    seen = []
    executor.listeners = [lambda data, seq: seen.append(data["progress"])]
    executor.execute(task_id)
    assert seen == ["0%", "0%", "15%", "46%", "93%", "100%"]


def test_a_database_pool_that_stays_busy_past_its_timeout_leaves_the_job_to_be_retried_not_failed(
        client, session_factory, redis, images):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    task_id = submit(client)
    executor = make_executor(session_factory, redis, images)
    driver = executor.drivers["simulator"]

    def pool_exhausted(job):
        raise PoolTimeout("QueuePool limit of size 20 overflow 20 reached, connection timed out, timeout 3.00")

    driver.submit = pool_exhausted  # type: ignore[method-assign]
    with pytest.raises(PoolTimeout):
        executor.execute(task_id)
    with session_factory() as s:
        task = s.get(Task, task_id)
        assert task.status in protocol.OPEN_STATUSES and task.fail_reason is None
    driver.submit = SimulatorDriver.submit.__get__(driver)  # the pool has room again: the retry finishes it
    assert executor.execute(task_id) == DONE


def test_a_job_without_progress_steps_draws_its_picture_just_before_its_end_and_still_ends_on_time(
        client, session_factory, redis, images, monkeypatch):
    from workers.drivers import simulator

    task_id = submit(client)
    clock = FakeClock()
    start = clock.now
    drawn_at = []
    real_produce = simulator.produce

    def produce(*args, **kwargs):
        drawn_at.append(clock.now - start)
        return real_produce(*args, **kwargs)

    monkeypatch.setattr(simulator, "produce", produce)
    executor = make_executor(session_factory, redis, images, clock=clock)
    executor.drivers["simulator"] = SimulatorDriver(images, 60.0, redis, clock=clock, sleep=clock.sleep,
                                                    progress_steps=0)
    finished = []
    executor.listeners = [lambda data, seq: finished.append(clock.now - start) if data["status"] == "SUCCESS" else None]
    assert executor.execute(task_id) == DONE
    # A 60 s job waits without drawing anything until 2 s before its end, and is done at 60 s, not later.
    assert drawn_at == [60_000 - simulator.FINAL_DRAW_LEAD_SECONDS * 1000]
    assert finished == [60_000]
