"""A scriptable webhook receiver and a byte-counting sentinel, both real sockets on loopback."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


@dataclass
class Received:
    """One request as the receiver saw it (headers with lower-case names)."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (a hanging receiver); cut short when the receiver stops.
    delay: float = 0.0


#: (index of the request, from 0; the request) -> the reply.
Script = Callable[[int, Received], Reply]


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers as `script` says."""

    def __init__(self, script: Script | None = None, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
                 ) -> None:
        self.script = script or (lambda _i, _r: Reply())
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Received(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()},
                                   body)
                with receiver._lock:
                    index = len(receiver.received)
                    receiver.received.append(request)
                reply = receiver.script(index, request)
                if reply.delay and receiver._stopping.wait(reply.delay):
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up first

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook", host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"receiver got {len(self.received)} requests, expected {count} within {timeout}s")


def verify(secret: str, request: Received) -> object:
    """Check a received webhook with the `standardwebhooks` library receivers use; returns the JSON."""
    return Webhook(secret).verify(request.body, request.headers)


class Sentinel:
    """A TCP listener on 127.0.0.1 that counts every byte and connection it receives."""

    def __init__(self) -> None:
        self.bytes = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self._sock.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    self.bytes += len(chunk)

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()  # wakes accept() at once
        self._thread.join(timeout=2)

    def __enter__(self) -> Sentinel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- building the delivery side against a test database ------------------------------------------

#: A fixed Standard Webhooks secret for tests (32 bytes of key).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make_deliverer(session_factory, clock, schedule=(0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0,
                                                   72000.0, 86400.0),
                   timeout=5.0, allow_private=True, resolver=None, route=None, enqueue=None, seed=7):
    """A Deliverer with the test secret, a seeded jitter and (by default) loopback allowed."""
    import random

    from workers.ssrf import system_resolver
    from workers.webhook_http import Transport
    from workers.webhook_signing import SecretSource
    from workers.webhooks import Deliverer

    transport = Transport(allow_private=allow_private, resolver=resolver or system_resolver, route=route)
    return Deliverer(session_factory, transport, SecretSource(session_factory, SECRET), schedule, timeout,
                     enqueue=enqueue, clock=clock, rand=random.Random(seed), worker="webhooks@test/1")


def hooked_task(session_factory, url: str, clock=None) -> int:
    """Insert an IMAGINE row with `url` as its notifyHook, claimed once (attempt 1); returns its id."""
    from app import protocol
    from app.models import Task, new_task_id, now_ms

    now = clock() if clock else now_ms()
    task_id = new_task_id()
    with session_factory() as session:
        session.add(Task(
            id=task_id, action=protocol.IMAGINE, status=protocol.NOT_START, prompt="a fox", prompt_en="a fox",
            description="/imagine a fox", submit_time=now, properties={"notifyHook": url, "discordInstanceId": "sim-1"},
            buttons=[], mode="FAST", queue="mj.fast", bot_type="MID_JOURNEY", notify_hook=url, inputs={},
            attempt=1, seq=0, updated_at=now,
        ))
        session.commit()
    return task_id


def events_for(session_factory, task_id: int, outbox, clock=None):
    """The TaskEvents of the task's claim (attempt 1) with `outbox` listening."""
    from app.models import now_ms
    from workers.events import TaskEvents

    return TaskEvents(session_factory, None, task_id, 1, [outbox], clock or now_ms)


def deliveries(session_factory, task_id: int | None = None):
    """Every delivery row (of one task), oldest event first."""
    from sqlalchemy import select

    from app.models import WebhookDelivery

    with session_factory() as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.seq, WebhookDelivery.id)
        if task_id is not None:
            query = query.where(WebhookDelivery.task_id == task_id)
        return list(session.scalars(query))
