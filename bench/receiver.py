"""A local webhook receiver: records when each POST arrived and what it carried."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    """One received POST: wall-clock epoch ms when its body was read, and the task JSON."""

    arrived_ms: float
    task: dict[str, Any]


class Receiver:
    """A threaded HTTP server on a free loopback port answering 200 to every POST."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        lock = threading.Lock()
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.time() * 1000.0
                try:
                    task = json.loads(body)
                except ValueError:
                    task = {}
                with lock:
                    deliveries.append(Delivery(arrived, task))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A name, not an IP literal: the submit check refuses IP-literal hooks whatever the settings say.
        self.url = f"http://localhost:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    def of_status(self, status: str) -> dict[str, Delivery]:
        """The first delivery per task id whose task JSON has `status`."""
        found: dict[str, Delivery] = {}
        for delivery in list(self.deliveries):
            if delivery.task.get("status") == status:
                found.setdefault(str(delivery.task.get("id")), delivery)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
