"""A scriptable upstream midjourney-proxy on 127.0.0.1, for the mjproxy driver's tests.

It speaks the protocol over real HTTP (a Flask app under werkzeug's threaded server):
submits create tasks (`/submit/action` on a modal button answers 21 with a MODAL task,
`/submit/modal` completes it), `list-by-condition` returns the stored task JSON, `cancel`
cancels, and `/img/<name>` serves images. Tests move tasks along with `update` and queue
scripted answers (a code, an HTTP status, a delay) per path with `script`.
"""
from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import make_server

from app import protocol

_MODAL_BUTTON_RE = re.compile(r"^MJ::(CustomZoom|Inpaint|Job::PicReader::\d|Job::PromptAnalyzer::\d)")
_ACTION_OF = {"/submit/imagine": "IMAGINE", "/submit/describe": "DESCRIBE", "/submit/blend": "BLEND",
              "/submit/shorten": "SHORTEN", "/insight-face/swap": "SWAP_FACE", "/submit/action": "UPSCALE"}


@dataclass
class Reply:
    """A scripted answer: an envelope code (with description and properties), or a bare HTTP status."""

    code: int = protocol.CODE_SUCCESS
    description: str = "Submit success"
    properties: dict[str, Any] = field(default_factory=dict)
    http_status: int = 200
    delay_seconds: float = 0.0


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class FakeMjproxy:
    """Start with `with FakeMjproxy() as fake:`; `fake.url` is the base URL an account points at."""

    def __init__(self, secret: str | None = "up-secret") -> None:
        self.secret = secret
        self.tasks: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.images: dict[str, tuple[bytes, str]] = {}
        self._scripts: dict[str, list[Reply]] = {}
        self._ids = itertools.count(1_700_000_000_000_001)
        self._lock = threading.Lock()
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeMjproxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    # -- what tests use --------------------------------------------------------------------
    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next calls to `path` (e.g. "/submit/imagine") with `replies`, in order."""
        with self._lock:
            self._scripts.setdefault(path, []).extend(replies)

    def serve_image(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve `data` at `<url>/img/<name>`; returns that URL."""
        self.images[name] = (data, content_type)
        return f"{self.url}/img/{name}"

    def update(self, task_id: str, **changes: Any) -> dict[str, Any]:
        """Change a stored task (as the upstream's worker would); `properties` merge."""
        with self._lock:
            task = self.tasks[task_id]
            properties = changes.pop("properties", None)
            task.update(changes)
            if properties:
                task["properties"] = {**task["properties"], **properties}
            return dict(task)

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    def wait_for_call(self, path: str, count: int = 1, timeout: float = 5.0) -> Call:
        """The `count`-th call to `path`, waiting for it. Raises AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.calls_to(path)
            if len(calls) >= count:
                return calls[count - 1]
            time.sleep(0.02)
        raise AssertionError(f"no call {count} to {path}; calls: {[c.path for c in self.calls]}")

    def task_for(self, state: str, timeout: float = 5.0) -> str:
        """The id of the newest upstream task submitted with `state` (mjq sends its task id), waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [t["id"] for t in self.tasks.values() if t["state"] == state]
            if found:
                return max(found)
            time.sleep(0.02)
        raise AssertionError(f"no upstream task with state {state!r}")

    # -- the upstream -----------------------------------------------------------------------
    def _new_task(self, action: str, status: str, body: dict[str, Any]) -> dict[str, Any]:
        task_id = str(next(self._ids))
        task = {"id": task_id, "action": action, "status": status, "prompt": body.get("prompt"),
                "promptEn": body.get("prompt"), "description": "", "state": body.get("state"),
                "submitTime": int(time.time() * 1000), "startTime": None, "finishTime": None, "imageUrl": None,
                "progress": "0%" if status == protocol.SUBMITTED else None, "failReason": None,
                "properties": {"discordInstanceId": "upstream-account", "nonce": "99"}, "buttons": []}
        self.tasks[task_id] = task
        return task

    def _build(self) -> Flask:
        app = Flask("fake_mjproxy")

        @app.before_request
        def record_and_authenticate() -> Response | None:
            if request.path.startswith("/img/"):
                return None
            path = request.path.removeprefix("/mj")
            with self._lock:
                self.calls.append(Call(path, request.get_json(silent=True) or {}, dict(request.headers)))
            if self.secret and request.headers.get("mj-api-secret") != self.secret:
                return Response("", status=401)
            with self._lock:
                script = self._scripts.get(path)
                reply = script.pop(0) if script else None
            if reply is None:
                return None
            time.sleep(reply.delay_seconds)
            if reply.http_status != 200:
                return Response("upstream trouble", status=reply.http_status)
            if reply.code not in (protocol.CODE_SUCCESS, protocol.CODE_IN_QUEUE):
                return jsonify(protocol.envelope(reply.code, reply.description, None, reply.properties))
            g.code = reply.code  # an accepting script (22) still creates the task below
            return None

        def accept(path: str, status: str = protocol.SUBMITTED) -> Response:
            body = request.get_json(silent=True) or {}
            with self._lock:
                task = self._new_task(_ACTION_OF.get(path, "IMAGINE"), status, body)
            code = protocol.CODE_EXISTED if status == protocol.MODAL else g.get("code", protocol.CODE_SUCCESS)
            return jsonify(protocol.envelope(code, "Submit success", task["id"], {"discordInstanceId": "u"}))

        for path in ("/submit/imagine", "/submit/describe", "/submit/blend", "/submit/shorten",
                     "/insight-face/swap"):
            app.add_url_rule(f"/mj{path}", path, lambda path=path: accept(path), methods=["POST"])

        @app.post("/mj/submit/action")
        def action() -> Response:
            body = request.get_json(silent=True) or {}
            if str(body.get("taskId")) not in self.tasks:
                return jsonify(protocol.envelope(protocol.CODE_NOT_FOUND, "task not found"))
            modal = _MODAL_BUTTON_RE.match(str(body.get("customId") or ""))
            return accept("/submit/action", protocol.MODAL if modal else protocol.SUBMITTED)

        @app.post("/mj/submit/modal")
        def modal() -> Response:
            body = request.get_json(silent=True) or {}
            task = self.tasks.get(str(body.get("taskId")))
            if task is None or task["status"] != protocol.MODAL:
                return jsonify(protocol.envelope(protocol.CODE_VALIDATION_ERROR, "not a modal task"))
            self.update(task["id"], status=protocol.SUBMITTED, progress="0%", prompt=body.get("prompt"))
            return jsonify(protocol.envelope(protocol.CODE_SUCCESS, "Submit success", task["id"]))

        @app.post("/mj/task/list-by-condition")
        def list_by_condition() -> Response:
            ids = [str(i) for i in (request.get_json(silent=True) or {}).get("ids") or []]
            with self._lock:
                return jsonify([dict(self.tasks[i]) for i in ids if i in self.tasks])

        @app.post("/mj/task/<task_id>/cancel")
        def cancel(task_id: str) -> Response:
            if task_id not in self.tasks:
                return jsonify(protocol.envelope(protocol.CODE_NOT_FOUND, "task not found"))
            self.update(task_id, status=protocol.CANCEL, failReason="cancelled by request")
            return jsonify(protocol.envelope(protocol.CODE_SUCCESS, "Cancelled", task_id))

        @app.get("/img/<name>")
        def image(name: str) -> Response:
            if name not in self.images:
                return Response("no such image", status=404)
            data, content_type = self.images[name]
            return Response(data, mimetype=content_type)

        return app
