"""`/metrics` after real traffic: jobs submitted and run by the executor, webhooks delivered, one job
still running and one still waiting. Every series is there with its labels and non-zero values."""
from __future__ import annotations

import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.models import now_ms
from tests.fakes.webhooks import Receiver, make_deliverer
from tests.unit.test_executor import FakeClock
from workers.drivers.simulator import SimulatorDriver
from workers.executor import DONE, FAILED, Executor
from workers.scheduler import LeaseKeeper, Scheduler
from workers.webhook_outbox import WebhookOutbox

#: The simulated run time of a job, seconds (the executor's fake clock advances by it).
JOB_SECONDS = 12.0


class HeldDriver(SimulatorDriver):
    """A simulator whose jobs stay IN_PROGRESS until `release` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.running = threading.Event()
        self.release = threading.Event()

    def follow(self, job, upstream_ref, reporter) -> None:
        reporter.started()
        self.running.set()
        self.release.wait(10)
        super().follow(job, upstream_ref, reporter)


def scrape(client, headers=None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def submit(client, prefix: str, prompt: str, hook: str | None = None) -> int:
    body = {"prompt": prompt, **({"notifyHook": hook} if hook else {})}
    answer = client.post(f"{prefix}/submit/imagine", json=body).get_json()
    assert answer["code"] in (1, 22), answer
    return int(answer["result"])


def executor(session_factory, redis, images, driver=None, scheduler=None) -> Executor:
    clock = FakeClock(now_ms())
    driver = driver or SimulatorDriver(images, JOB_SECONDS, redis, clock=clock, sleep=clock.sleep)
    return Executor(session_factory, redis, {"simulator": driver}, "fast@test/1", clock=clock,
                    listeners=[WebhookOutbox(0.0, 0.0, None, clock)], scheduler=scheduler,
                    keeper=LeaseKeeper(scheduler) if scheduler else None)


@pytest.fixture
def traffic(app, client, session_factory, redis, images):
    """2 FAST + 1 RELAX successes with webhooks delivered, a banned prompt, a moderated job,
    one job running (holding its slot) and one waiting; yields the running job's driver."""
    app.extensions["mjq"].settings = app.extensions["mjq"].settings.__class__.from_env(
        {}, **{**app.extensions["mjq"].settings.__dict__, "webhook_allow_private": True})
    with Receiver() as receiver:
        ok = [submit(client, "/mj-fast/mj", f"a red fox {i}", receiver.url()) for i in range(2)]
        ok.append(submit(client, "/mj-relax/mj", "a blue fox", receiver.url()))
        scheduler = Scheduler(redis)
        for task_id in ok:
            assert executor(session_factory, redis, images, scheduler=scheduler).execute(task_id) == DONE
        for prompt in ("a fox [sim:banned]", "a fox [sim:moderated]"):
            job = submit(client, "/mj-fast/mj", prompt)
            assert executor(session_factory, redis, images, scheduler=scheduler).execute(job) == FAILED
        deliverer = make_deliverer(session_factory, now_ms)
        for delivery_id in sorted(deliverer.sweep()):
            deliverer.attempt(delivery_id)
        receiver.wait_for(3, timeout=10)
    held = HeldDriver(images, 0.0, redis)
    running = submit(client, "/mj-fast/mj", "a slow fox")
    thread = threading.Thread(target=executor(session_factory, redis, images, held, scheduler).execute,
                              args=(running,))
    thread.start()
    assert held.running.wait(10)
    submit(client, "/mj-fast/mj", "a waiting fox")
    time.sleep(0.01)  # the waiting job is a few ms old when scraped
    yield held
    held.release.set()
    thread.join(10)


def at(got, name: str, **labels: str) -> float:
    return got[(name, tuple(sorted(labels.items())))]


def test_metrics_after_traffic_show_every_series_with_its_labels_and_non_zero_values(client, traffic):
    got = scrape(client)
    fast, relax = {"action": "IMAGINE", "mode": "FAST"}, {"action": "IMAGINE", "mode": "RELAX"}
    assert at(got, "mjq_jobs_submitted_total", **fast) == 6
    assert at(got, "mjq_jobs_submitted_total", **relax) == 1
    assert at(got, "mjq_jobs_finished_total", **fast, status="SUCCESS") == 2
    assert at(got, "mjq_jobs_finished_total", **fast, status="FAILURE") == 2
    assert at(got, "mjq_jobs_finished_total", **relax, status="SUCCESS") == 1
    assert at(got, "mjq_jobs_open", **fast, status="IN_PROGRESS") == 1
    assert at(got, "mjq_jobs_open", **fast, status="NOT_START") == 1
    assert at(got, "mjq_queue_depth", pool="fast") == 1
    assert at(got, "mjq_queue_depth", pool="relax") == 0
    assert at(got, "mjq_queue_oldest_age_seconds", pool="fast") > 0
    running = {labels: v for (name, labels), v in got.items() if name == "mjq_inflight" and v}
    assert list(running.values()) == [1] and dict(next(iter(running)))["pool"] == "fast"
    account = dict(next(iter(running)))["account"]
    assert at(got, "mjq_slots_held", account=account, pool="fast") == 1
    assert sum(v for (name, _), v in got.items() if name == "mjq_slots_waiting") == 1
    # Finished jobs that started: 3 successes and the moderated one (the banned prompt never started).
    assert at(got, "mjq_job_duration_seconds_count", **fast) == 3
    assert at(got, "mjq_job_duration_seconds_count", **relax) == 1
    assert at(got, "mjq_job_duration_seconds_bucket", **relax, le="10.0") == 0
    assert at(got, "mjq_job_duration_seconds_bucket", **relax, le="20.0") == 1
    assert at(got, "mjq_job_duration_seconds_sum", **relax) == pytest.approx(JOB_SECONDS, abs=1)
    assert at(got, "mjq_webhook_deliveries_total", outcome="delivered") >= 3
    assert at(got, "mjq_upstream_errors_total", kind="banned_prompt") == 1
    assert at(got, "mjq_upstream_errors_total", kind="moderated") == 1
    assert at(got, "mjq_upstream_errors_total", kind="other") == 0
    for family in ("mjq_jobs_submitted", "mjq_jobs_finished", "mjq_jobs_open", "mjq_queue_depth",
                   "mjq_queue_oldest_age_seconds", "mjq_inflight", "mjq_slots_held", "mjq_slots_waiting",
                   "mjq_job_duration_seconds_count", "mjq_webhook_deliveries", "mjq_upstream_errors"):
        assert any(v > 0 for (n, _), v in got.items() if n.removesuffix("_total") == family), family


def test_two_scrapes_without_traffic_between_them_agree(client, traffic):
    first, second = scrape(client), scrape(client)
    age = "mjq_queue_oldest_age_seconds"
    assert {k: v for k, v in first.items() if k[0] != age} == {k: v for k, v in second.items() if k[0] != age}


def test_a_metrics_token_is_required_when_one_is_set(app, client):
    settings = app.extensions["mjq"].settings
    app.extensions["mjq"].settings = settings.__class__.from_env({}, **{**settings.__dict__,
                                                                      "metrics_token": "s3cret"})
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert at(scrape(client, {"Authorization": "Bearer s3cret"}), "mjq_queue_depth", pool="fast") == 0
