"""Webhook deliveries per second of one webhook worker process, beside bare `requests.post` loops.

A receiver answering 204 runs in its own process on loopback (so it shares no interpreter
lock with what is measured). mjq: one `celery worker -Q mj.webhooks -P threads -c 20`, as
the Procfile runs it, on the stack's PostgreSQL and Redis; DELIVERIES rows are written to
`webhook_deliveries` up front and one `mj.webhook.deliver` message per row is sent; the
rate is rows marked delivered per second between the first send and the last delivery.
Each delivery is the whole path: claim (compare-and-set), SSRF check and resolution,
Standard Webhooks signature, POST to the checked address, outcome and attempt log.

Baselines, measured in the same run: `requests.post` of the same body in a loop, in one
thread and in 20 threads of one process (the worker's concurrency), for BASELINE_SECONDS.

`python -m bench.webhooks` runs this alone (about 40 s); `make bench` runs it last.
"""
from __future__ import annotations

import multiprocessing
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from sqlalchemy import delete, func, select

from app import protocol
from app.models import WebhookAttempt, WebhookDelivery, now_ms
from bench.harness import BenchError, Stack
from bench.report import Row, Section, per_second, ratio, table
from config import Settings
from workers import queues
from workers.celery_app import make_celery
from workers.webhooks import DELIVER, PENDING, endpoint_key

DELIVERIES = 3000
WARMUP = 100
THREADS = 20
BASELINE_SECONDS = 5.0
TIMEOUT_SECONDS = 60.0
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: A SUCCESS task with nine buttons: the size of a real event (about 1.4 KB).
BODY = protocol.dumps({
    "id": "1795306566370466123", "action": "IMAGINE", "status": "SUCCESS", "prompt": "a red fox --ar 16:9",
    "promptEn": "a red fox --ar 16:9", "description": "/imagine a red fox --ar 16:9", "state": None,
    "submitTime": 1795306566370, "startTime": 1795306567370, "finishTime": 1795306572370,
    "imageUrl": "http://127.0.0.1:8080/mj/image/1795306566370466123/grid.png", "progress": "100%",
    "failReason": None, "properties": {"discordInstanceId": "sim-1", "notifyHook": "http://localhost/hook"},
    "buttons": [protocol.button(f"MJ::JOB::upsample::{i}::5f4a7d2c-8b1e-4c3f-9a6d-2e7b1c0f9d8e", f"U{i}")
                for i in range(1, 10)],
})


def _serve(port_out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    port_out.put(server.server_address[1])
    server.serve_forever()


def _requests_loop(url: str, threads: int, seconds: float) -> float:
    """Bare requests.post calls per second in `threads` threads of this process."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            try:
                requests.post(url, data=BODY.encode(), headers={"Content-Type": "application/json"}, timeout=15)
            except requests.RequestException:
                continue  # a reset under load: not a delivery, and the loop goes on
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - start)


def _write_rows(stack: Stack, url: str, count: int, first_task: int) -> list[int]:
    now = now_ms()
    rows = [WebhookDelivery(task_id=first_task + i, seq=1, event_id=f"msg_{first_task + i}_1", url=url,
                            endpoint=endpoint_key(url), body=BODY, task_status="SUCCESS", progress="100%",
                            status=PENDING, attempts=0, due_at=now, next_attempt_at=now, locked_until=now + 600_000,
                            created_at=now, updated_at=now) for i in range(count)]
    with stack.session_factory() as session:
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


def _delivered(stack: Stack) -> int:
    with stack.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookDelivery)
                                  .where(WebhookDelivery.status == "delivered")) or 0)


def _mjq_rate(stack: Stack, url: str) -> float:
    env = stack.env(MJQ_WEBHOOK_SECRET=SECRET, MJQ_LOG_LEVEL="WARNING")
    celery = make_celery(Settings.from_env(env))
    stack.worker(queues.WEBHOOKS, "webhooks", env, concurrency=THREADS)

    def send(ids: list[int]) -> None:
        with celery.producer_or_acquire() as producer:
            for delivery_id in ids:
                celery.send_task(DELIVER, args=[str(delivery_id)], queue=queues.WEBHOOKS,
                                 routing_key=queues.WEBHOOKS, producer=producer)

    send(_write_rows(stack, url, WARMUP, 1))
    _wait(stack, WARMUP, "the warm-up deliveries")
    ids = _write_rows(stack, url, DELIVERIES, 1_000_000)
    start = time.monotonic()
    send(ids)
    _wait(stack, WARMUP + DELIVERIES, "the measured deliveries")
    return DELIVERIES / (time.monotonic() - start)


def _wait(stack: Stack, count: int, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while _delivered(stack) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {_delivered(stack)} of {count} delivered in {TIMEOUT_SECONDS:.0f}s "
                             f"(logs in {stack.log_dir})")
        time.sleep(0.05)


def _clear(stack: Stack) -> None:
    with stack.session_factory() as session:
        session.execute(delete(WebhookAttempt))
        session.execute(delete(WebhookDelivery))
        session.commit()


def run(stack: Stack) -> Section:
    section = Section("WH", "webhook deliveries per second per worker process")
    stack.reset()
    _clear(stack)
    ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    receiver = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    receiver.start()
    try:
        url = f"http://localhost:{ports.get(timeout=10)}/hook"
        _requests_loop(url, 1, 0.5)  # warm-up
        one = _requests_loop(url, 1, BASELINE_SECONDS)
        many = _requests_loop(url, THREADS, BASELINE_SECONDS)
        mjq = _mjq_rate(stack, url)
    finally:
        stack.stop_all()
        receiver.terminate()
        receiver.join(timeout=5)
        _clear(stack)
    section.rows += [
        Row("WH1", f"webhook deliveries, 1 worker process × {THREADS} threads", per_second(mjq, "deliveries"),
            f"{per_second(one, 'posts')} (bare requests.post, 1 thread)", ratio(mjq, one)),
        Row("WH2", "the same, against bare requests.post in as many threads", per_second(mjq, "deliveries"),
            f"{per_second(many, 'posts')} ({THREADS} threads, 1 process)", ratio(mjq, many)),
    ]
    section.notes += [
        f"{DELIVERIES} deliveries of a {len(BODY)}-byte task JSON to a 204 receiver in its own process on loopback "
        "(MJQ_WEBHOOK_ALLOW_PRIVATE=true); each is claim + SSRF check + signature + POST + outcome and attempt "
        "log in PostgreSQL, driven by one `mj.webhook.deliver` message per row.",
        f"Baselines: `requests.post` of the same body in a loop for {BASELINE_SECONDS:.0f} s, in 1 and in "
        f"{THREADS} threads of the benchmark process; a new connection per POST in both (mjq also connects anew "
        "at every attempt, after resolving and checking the address).",
    ]
    return section


def main() -> int:
    work_dir = Path(tempfile.mkdtemp(prefix="mjq-bench-webhooks-"))
    with Stack(work_dir) as stack:
        section = run(stack)
    print(table(section.rows))
    for note in section.notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
