"""Faults injected into a running cluster (../shared/reference/reliability.md §1), each asserted from PostgreSQL rows
and the simulated upstream's own submission counts. 0 retries: a flaky fault test is a bug."""
from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from app.models import now_ms
from tests.databases import create_database
from tests.faults.cluster import FAULT_ENV, TERMINAL, Cluster, PostgresServer, RedisServer
from tests.faults.conftest import record
from tests.processes import wait_for

pytestmark = pytest.mark.faults

#: The reconciler's period in the fault cluster, seconds.
SWEEP_SECONDS = float(FAULT_ENV["MJQ_RECONCILE_INTERVAL_SECONDS"])


def submit_many(cluster: Cluster, n: int, prompt: str = "a fox") -> list[int]:
    ids = []
    for i in range(n):
        status, body = cluster.submit(f"{prompt} {i}")
        assert status == 200 and body["code"] in (1, 22), body
        ids.append(int(body["result"]))
    return ids


def lost(cluster: Cluster, ids: list[int]) -> int:
    return sum(1 for t in cluster.rows(ids).values() if t.status != "SUCCESS")


def test_t1_1_kill_9_of_a_worker_holding_50_jobs_loses_none(cluster: Cluster):
    """Half the jobs are past their upstream submit (its id recorded), half are inside the submit
    call (the upstream counted it, mjq has no id yet) when the worker dies."""
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker()
    recorded = submit_many(cluster, 25, "a fox [sim:seconds=20]")
    unrecorded = submit_many(cluster, 25, "a slow fox [sim:seconds=20] [sim:submit-seconds=8]")
    ids = recorded + unrecorded

    def in_place() -> bool:
        rows, counts = cluster.rows(ids), cluster.submissions()
        return (all(rows[i].upstream_state == "SUBMITTED" for i in recorded)
                and all(rows[i].upstream_state == "SUBMITTING" and counts.get(rows[i].properties["nonce"]) == 1
                        for i in unrecorded))
    try:
        wait_for(in_place, 30, "25 jobs submitted upstream and 25 inside the submit call")
    except AssertionError:
        states = Counter((t.status, t.upstream_state, t.attempt) for t in cluster.rows(ids).values())
        raise AssertionError(f"jobs not in place for the kill: {states}") from None
    cluster.kill("fast")
    cluster.procs["fast"].stop()
    restarted = time.monotonic()
    cluster.start_worker()
    recover = cluster.wait_terminal(ids, 90)
    missing = lost(cluster, ids)
    dups_recorded, dups_unrecorded = cluster.duplicates(recorded), cluster.duplicates(unrecorded)
    worst_unrecorded = cluster.max_duplicates(unrecorded)
    ok = missing == 0 and dups_recorded == 0 and worst_unrecorded <= 1
    record("T1.1 kill -9 worker with 50 in flight", 50, missing, dups_recorded + dups_unrecorded,
           f"{time.monotonic() - restarted:.1f} s",
           f"all finished {recover:.1f} s after restart; duplicates: {dups_recorded} of 25 with the upstream id "
           f"recorded, {dups_unrecorded} of 25 killed inside the submit call (at most {worst_unrecorded} per job)", ok)
    assert ok


def test_t1_2_a_job_that_kills_its_worker_every_time_fails_after_3_runs_with_its_webhook(cluster: Cluster):
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker()
    status, body = cluster.submit("poison [sim:crash]", hook=f"http://localhost:{server.server_port}/hook")
    task_id = int(body["result"])
    start = time.monotonic()
    restarts = 0
    while time.monotonic() - start < 150:
        task = cluster.rows([task_id])[task_id]
        if task.status in TERMINAL:
            break
        if cluster.procs["fast"].proc.poll() is not None:  # the supervisor restarts a dead worker
            restarts += 1
            cluster.procs["fast"].stop()
            cluster.start_worker()
        time.sleep(0.5)
    task = cluster.rows([task_id])[task_id]
    wait_for(lambda: any(e["status"] == "FAILURE" for e in received), 30, "the FAILURE webhook", interval=0.5)
    time.sleep(3 * 3)  # three sweeps: a loop would start a fourth execution here
    server.shutdown()
    executions = cluster.crashes().get(task.properties["nonce"], 0)  # counted by the upstream before each kill
    after = cluster.rows([task_id])[task_id]
    print(f"T1.2: {task.status} after {restarts} restarts, {executions} executions: {task.fail_reason}")
    submits = cluster.submissions().get(task.properties["nonce"], 0)
    ok = (task.status == "FAILURE" and "3 times" in (task.fail_reason or "") and 1 <= executions <= 3
          and restarts == executions and after.attempt == task.attempt and after.status == "FAILURE")
    record("T1.2 poison job (SIGKILL each run)", 1, 0, max(0, submits - 1), f"{time.monotonic() - start:.1f} s",
           f"{restarts} worker deaths, {executions} executions, FAILURE + webhook, none after it", ok)
    assert ok


def test_t1_3_sigterm_mid_job_loses_nothing_and_runs_nothing_twice(cluster: Cluster):
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker()
    ids = submit_many(cluster, 10)
    wait_for(lambda: all(t.status == "IN_PROGRESS" for t in cluster.rows(ids).values()), 30, "jobs in progress")
    cluster.kill("fast", signal.SIGTERM)
    cluster.procs["fast"].proc.wait(timeout=60)
    finished_before = {i for i, t in cluster.rows(ids).items() if t.status == "SUCCESS"}
    start = time.monotonic()
    cluster.start_worker()
    cluster.wait_terminal(ids, 60)
    time.sleep(5)  # a re-run would show up as a second claim
    rows = cluster.rows(ids)
    reruns = sum(1 for i in finished_before if rows[i].attempt != 1)
    missing, dups = lost(cluster, ids), cluster.duplicates(ids)
    ok = missing == 0 and reruns == 0 and dups == 0
    record("T1.3 SIGTERM mid-job (warm shutdown)", 10, missing, dups, f"{time.monotonic() - start:.1f} s",
           f"{len(finished_before)} finished during shutdown, {reruns} re-run", ok)
    assert ok


def test_t1_4_redis_sigkill_under_200_jobs(cluster: Cluster, tmp_path):
    aof = RedisServer(tmp_path / "aof", aof=True)
    aof.start()
    cluster.redis.stop()
    cluster.redis = aof
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker(concurrency=250)
    ids = submit_many(cluster, 200)
    time.sleep(2)
    aof.kill()
    time.sleep(1)
    aof.start()
    back = time.monotonic()
    _, body = cluster.submit("after the restart")
    probe = int(body["result"])
    broker = redis_lib.Redis(port=aof.port)
    # The AOF's last second may or may not lose a message in a run; this job's message is lost for sure
    # (deleted from its queue before a worker takes it: the backlog of the 200 is ahead of it), so every run
    # shows the reconciler sending a lost message again.
    _, body = cluster.submit("lost at the restart")
    dropped = int(body["result"])
    removed = sum(broker.lrem("mj.fast", 1, raw) for raw in broker.lrange("mj.fast", 0, -1)
                  if body["result"].encode() in raw)
    assert removed == 1, "the lost job's message was no longer in its queue to delete"
    first_sent = cluster.rows([dropped])[dropped].enqueued_at or 0
    ids.append(dropped)
    # Consuming again = a worker takes a message after the restart: its claim bumps the row's attempt.
    # (The probe itself queues behind the backlog of the 200, FIFO, so it is reported, not bounded.)
    before = {i: t.attempt for i, t in cluster.rows([*ids, probe]).items()}
    wait_for(lambda: any(t.attempt > before[i] for i, t in cluster.rows([*ids, probe]).items()), 60,
             "a message taken after the restart")
    consumed_after = time.monotonic() - back
    resumed_ms = now_ms()
    probe_after: float | None = None
    # From two sweep periods after the workers consume again until every job ended (nothing can move
    # before: a worker with 200 busy threads restores its unacked messages and reconnects slowly, the GIL
    # shared with them): no open row may be left behind, i.e. stay untouched (neither moved by a worker nor
    # sent again by the reconciler) while Redis holds no message of it, for longer than two sweeps after the
    # reconciler's rule lets it act. A row waiting its turn in the queue is not left behind, and neither is
    # one whose message a worker has popped and not yet recorded as reserved: a GIL-starved consumer leaves
    # a BRPOP reply in its socket for a second or two, so the time without a message is measured
    # continuously, not as the row's age (which counts its wait in the queue).

    def in_redis(task_ids: list[int]) -> set[int]:
        pipe = broker.pipeline(transaction=True)
        for name in ("mj.fast", "mj.normal"):
            pipe.lrange(name, 0, -1)
        pipe.hvals("unacked")
        raws = [raw for items in pipe.execute() for raw in items]
        return {i for i in task_ids if any(str(i).encode() in raw for raw in raws)}

    # A row whose message Redis lost (the AOF's last second, kombu's pop-to-unacked window) may be resent
    # once REQUEUE_AFTER has passed since it was last sent (the reconciler's "dropped" rule: sooner would race
    # a message still in a worker's hands); from then on it must be resent within two sweeps.
    requeue_after_ms = float(FAULT_ENV["MJQ_REQUEUE_AFTER_SECONDS"]) * 1000
    allowed_ms = 2 * SWEEP_SECONDS * 1000
    time.sleep(2 * SWEEP_SECONDS)
    # Per messageless row: (when it was last touched, when it was first seen without a message since).
    gone: dict[int, tuple[int, int]] = {}
    longest_ms, ever_messageless, stale, notes = 0.0, set(), set(), {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = cluster.rows([*ids, probe])
        if probe_after is None and rows[probe].attempt > 0:
            probe_after = time.monotonic() - back
        open_rows = {i: t for i, t in rows.items() if t.status not in TERMINAL and i != probe}
        if not open_rows and probe_after is not None:
            break
        now = now_ms()
        held = in_redis(list(open_rows))
        for i, t in open_rows.items():
            touched = max(t.updated_at or 0, t.enqueued_at or 0)
            if i in held:
                gone.pop(i, None)
                continue
            if gone.get(i, (None,))[0] != touched:
                gone[i] = (touched, now)
            ever_messageless.add(i)
            answerable_from = max(gone[i][1], (t.enqueued_at or 0) + requeue_after_ms, resumed_ms)
            missing_ms = now - answerable_from
            longest_ms = max(longest_ms, missing_ms)
            if missing_ms > allowed_ms:
                stale.add(i)
                notes.setdefault(i, f"{i}: {t.status} attempt {t.attempt}, no message for {missing_ms / 1000:.1f} s "
                                    f"after the reconciler could resend it")
        time.sleep(0.5)
    try:
        cluster.wait_terminal([*ids, probe], 60)
    except AssertionError:
        pass  # an unfinished job counts as lost in the row below
    unfinished = {i for i, t in cluster.rows(ids).items() if t.status != "SUCCESS"}
    missing, dups = len(unfinished), cluster.duplicates(ids)
    resent = cluster.rows([dropped])[dropped].enqueued_at or 0
    resent_after = (resent - first_sent - requeue_after_ms) / 1000
    resent_in_time = resent > first_sent and resent_after * 1000 <= allowed_ms
    ok = consumed_after <= 30 and not stale and missing == 0 and resent_in_time
    record("T1.4 Redis SIGKILL (AOF) under 200 jobs", 201, missing, dups, f"{consumed_after:.1f} s",
           f"consuming again {consumed_after:.1f} s after restart (a job submitted then: taken at "
           f"{probe_after or 0:.1f} s, behind the backlog); {len(ever_messageless)} rows seen without a message in "
           f"Redis at some check, {len(stale)} left behind (no message > 2 sweeps = {allowed_ms / 1000:.0f} s after "
           f"the reconciler could resend it; longest {max(longest_ms, 0) / 1000:.1f} s); the job whose message was "
           f"deleted: sent again {resent_after:.1f} s after requeue-after (bound: 2 sweeps), "
           f"{'finished' if dropped not in unfinished else 'NOT finished'}", ok)
    aof.stop()
    assert ok, sorted(notes.values())


def test_t1_5_redis_total_loss_reenqueues_every_open_job_within_one_sweep(cluster: Cluster):
    """40 jobs running and 60 waiting in Redis when Redis loses everything."""
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker(concurrency=40)
    ids = submit_many(cluster, 100, "a fox [sim:seconds=8]")
    wait_for(lambda: sum(t.status == "IN_PROGRESS" for t in cluster.rows(ids).values()) == 40, 30, "40 jobs running")
    try:
        redis_lib.Redis(port=cluster.redis.port).shutdown(nosave=True)
    except redis_lib.ConnectionError:
        pass
    cluster.redis.proc.wait(timeout=10)
    waiting = [i for i, t in cluster.rows(ids).items() if t.status == "NOT_START"]
    cluster.redis.start()  # empty
    back_ms = now_ms()
    wait_for(lambda: all((t.enqueued_at or 0) >= back_ms for i, t in cluster.rows(waiting).items()), 30,
             "every waiting job to be sent again")
    sent_at = [cluster.rows(waiting)[i].enqueued_at or 0 for i in waiting]
    resent_s, spread_s = (max(sent_at) - back_ms) / 1000, (max(sent_at) - min(sent_at)) / 1000
    cluster.wait_terminal(ids, 120)
    missing, dups, worst = lost(cluster, ids), cluster.duplicates(ids), cluster.max_duplicates(ids)
    one_sweep = resent_s <= SWEEP_SECONDS + 1 and spread_s <= 1  # the first sweep after the restart sent them all
    ok = missing == 0 and worst <= 1 and one_sweep
    record("T1.5 Redis SHUTDOWN NOSAVE (total loss)", 100, missing, dups, f"{resent_s:.1f} s",
           f"all {len(waiting)} waiting jobs re-enqueued from PostgreSQL by one sweep ({spread_s:.2f} s apart; "
           f"sweep period {SWEEP_SECONDS:.0f} s); 40 running ones finished", ok)
    assert ok


def test_t1_6_a_job_longer_than_the_visibility_timeout_is_submitted_once(cluster: Cluster):
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker()
    _, body = cluster.submit("a long one [sim:seconds=45]")  # 1.5 x the 30 s visibility timeout
    task_id = int(body["result"])
    took = cluster.wait_terminal([task_id], 120)
    task = cluster.rows([task_id])[task_id]
    runs = cluster.submissions().get(task.properties["nonce"], 0)
    duplicate_dropped = "duplicate message dropped" in cluster.procs["fast"].output()
    ok = task.status == "SUCCESS" and runs == 1 and duplicate_dropped
    record("T1.6 job of 1.5x visibility timeout", 1, 0 if task.status == "SUCCESS" else 1, runs - 1, f"{took:.1f} s",
           f"{runs} upstream submission; redelivery dropped: {duplicate_dropped}", ok)
    assert ok


def test_t1_8_postgresql_stopped_for_60_s(tmp_path, cluster: Cluster):
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="mjq-faults-pg-")))
    pg.init()
    cluster.stop()
    (tmp_path / "on-private-pg").mkdir()
    cluster = Cluster(tmp_path / "on-private-pg", create_database(pg.admin_url, "mjq"), cluster.redis,
                      cluster.upstream)
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker()
    ids = submit_many(cluster, 20)
    time.sleep(1)
    pg.stop()
    slowest = 0.0
    codes: set[object] = set()
    down_until = time.monotonic() + 60
    while time.monotonic() < down_until:
        t0 = time.monotonic()
        try:
            resp = requests.post(f"{cluster.base}/mj/submit/imagine", json={"prompt": "while down"}, timeout=10)
            codes.add(resp.status_code)
        except requests.RequestException:
            codes.add("timeout")
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(2)
    pg.start()
    back = time.monotonic()
    try:
        cluster.wait_terminal(ids, 120)
        missing = lost(cluster, ids)
        ok = codes == {503} and slowest <= 5 and missing == 0
        record("T1.8 PostgreSQL stopped 60 s", 20, missing, cluster.duplicates(ids),
               f"{time.monotonic() - back:.1f} s",
               f"API answered {sorted(map(str, codes))}, slowest {slowest:.2f} s", ok)
    finally:
        cluster.stop()
        pg.stop()
        shutil.rmtree(pg.dir, ignore_errors=True)
    assert ok


def test_t1_9_a_worker_started_before_redis_consumes_once_redis_is_up(cluster: Cluster):
    cluster.redis.stop()
    cluster.start_web()
    worker = cluster.start_worker(wait_ready=False)
    time.sleep(5)
    cluster.redis.start()
    up = time.monotonic()
    _, body = cluster.submit("hello")
    task_id = int(body["result"])
    wait_for(lambda: cluster.rows([task_id])[task_id].status != "NOT_START", 30, "the job to be consumed")
    consumed = time.monotonic() - up
    ok = consumed <= 10 and "ready." in worker.output()
    record("T1.9 worker started before Redis", 1, 0, 0, f"{consumed:.1f} s", "consumed after Redis came up", ok)
    assert ok


def test_ledger_200_jobs_with_worker_crashes_charge_each_success_exactly_once(cluster: Cluster):
    from sqlalchemy import func, select

    from app.models_tenancy import ApiKey, LedgerEntry
    from app.services.keys import create_key
    from app.services.plans import DEFAULT_PLANS

    with cluster.sessions() as s:
        key_row, key = create_key(s, "ledger", "premium", "user", DEFAULT_PLANS, balance=10_000_000)
    plans = '{"premium": {"maxUnfinished": 500, "modes": ["FAST"], "dailyTasks": 5000, "submitsPerMinute": 5000}}'
    cluster.extra_env["MJQ_PLANS"] = plans
    cluster.start_web()
    cluster.start_beat()
    cluster.start_worker(concurrency=250)
    ids = []
    for i in range(200):
        resp = requests.post(f"{cluster.base}/mj/submit/imagine", json={"prompt": f"paid fox {i} [sim:seconds=8]"},
                             headers={"mj-api-secret": key}, timeout=10).json()
        assert resp["code"] in (1, 22), resp
        ids.append(int(resp["result"]))
    crashes = 0
    for _ in range(2):  # kill -9 the worker twice while jobs run, restart it each time
        time.sleep(3)
        cluster.kill("fast")
        cluster.procs["fast"].stop()
        crashes += 1
        cluster.start_worker(concurrency=250)
    recover = cluster.wait_terminal(ids, 180)
    rows = cluster.rows(ids)
    succeeded = {i for i, t in rows.items() if t.status == "SUCCESS"}
    with cluster.sessions() as s:
        charges = dict(s.execute(select(LedgerEntry.task_id, func.count()).where(LedgerEntry.kind == "charge")
                                 .group_by(LedgerEntry.task_id)).all())
        balance = s.get(ApiKey, key_row.id).balance
    wrong = [i for i in ids if charges.get(i, 0) != (1 if i in succeeded else 0)]
    ok = not wrong and balance == 10_000_000 - 14000 * len(succeeded) and len(succeeded) == 200
    record("Ledger: 200 paid jobs, 2 worker kills", 200, 200 - len(succeeded), cluster.duplicates(ids),
           f"{recover:.1f} s", f"{len(succeeded)} charged once each, {len(wrong)} wrong, balance consistent", ok)
    assert ok
