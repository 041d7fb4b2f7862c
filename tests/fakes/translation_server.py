"""A local stand-in for three translation APIs: OpenAI chat completions, Baidu and DeepL.

A real HTTP server on 127.0.0.1 (a free port) in a thread. It speaks each wire format,
checks each service's credentials the way the service does (Bearer key, Baidu's MD5 sign,
the DeepL-Auth-Key header), translates with a tiny dictionary, and records every request
so tests assert what was sent. `fail_status` and `delay_seconds` simulate an outage.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

OPENAI_PATH = "/v1/chat/completions"
BAIDU_PATH = "/api/trans/vip/translate"
DEEPL_PATH = "/v2/translate"

#: The fake's whole vocabulary; longer phrases are replaced first.
DICTIONARY = {
    "一只猫": "a cat",
    "猫": "cat",
    "狗": "dog",
    "在月亮上": "on the moon",
    "红色的狐狸": "a red fox",
    "水彩画": "watercolor painting",
    "文字": "text",
    "水印": "watermark",
    "ねこ": "cat",
    "고양이": "cat",
    "，": ",",
}


def dictionary_translate(text: str) -> str:
    """Each line of `text` with every known phrase replaced by its English, spaced and tidied."""
    lines = []
    for line in text.split("\n"):
        for phrase in sorted(DICTIONARY, key=len, reverse=True):
            line = line.replace(phrase, f" {DICTIONARY[phrase]} ")
        lines.append(re.sub(r"\s+([,.])", r"\1", " ".join(line.split())))
    return "\n".join(lines)


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class FakeTranslationServer:
    """Start with `with FakeTranslationServer() as server:`; `server.url` is its base URL."""

    def __init__(self, openai_key: str = "sk-test", baidu_appid: str = "20240101",
                 baidu_secret: str = "baidu-secret", deepl_key: str = "deepl-key:fx") -> None:
        self.openai_key, self.deepl_key = openai_key, deepl_key
        self.baidu_appid, self.baidu_secret = baidu_appid, baidu_secret
        self.requests: list[Recorded] = []
        #: When set, every endpoint answers this HTTP status with an error body.
        self.fail_status: int | None = None
        #: Seconds every endpoint waits before answering (cut short when the server stops).
        self.delay_seconds = 0.0
        #: When set, Baidu answers HTTP 200 with this error_code (as Baidu does).
        self.baidu_error_code: str | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-translation", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeTranslationServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeTranslationServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def answer(self, req: Recorded) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one request."""
        with self._lock:
            self.requests.append(req)
        if self.delay_seconds:
            self._stopping.wait(self.delay_seconds)
        if self.fail_status is not None:
            return self.fail_status, {"error": {"message": "the fake is down"}}
        handlers = {OPENAI_PATH: self._openai, BAIDU_PATH: self._baidu, DEEPL_PATH: self._deepl}
        if req.method != "POST" or req.path not in handlers:
            return 404, {"error": f"no route {req.method} {req.path}"}
        return handlers[req.path](req)

    def _openai(self, req: Recorded) -> tuple[int, dict[str, Any]]:
        if req.headers.get("authorization") != f"Bearer {self.openai_key}":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        body = req.json()
        user = [m["content"] for m in body["messages"] if m["role"] == "user"]
        message = {"role": "assistant", "content": dictionary_translate(user[-1])}
        return 200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    def _baidu(self, req: Recorded) -> tuple[int, dict[str, Any]]:
        form = req.form()
        expected = hashlib.md5(f"{self.baidu_appid}{form.get('q', '')}{form.get('salt', '')}{self.baidu_secret}"
                               .encode()).hexdigest()
        if form.get("appid") != self.baidu_appid or form.get("sign") != expected:
            return 200, {"error_code": "54001", "error_msg": "Invalid Sign"}
        if self.baidu_error_code:
            return 200, {"error_code": self.baidu_error_code, "error_msg": "fake error"}
        results = [{"src": line, "dst": dictionary_translate(line)} for line in form["q"].split("\n")]
        return 200, {"from": "zh", "to": form["to"], "trans_result": results}

    def _deepl(self, req: Recorded) -> tuple[int, dict[str, Any]]:
        if req.headers.get("authorization") != f"DeepL-Auth-Key {self.deepl_key}":
            return 403, {"message": "Wrong endpoint or authentication key"}
        if req.headers.get("content-type", "").startswith("application/json"):
            texts = req.json()["text"]
        else:
            texts = [v for k, v in parse_qsl(req.body.decode()) if k == "text"]
        return 200, {"translations": [{"detected_source_language": "ZH", "text": dictionary_translate(t)}
                                      for t in texts]}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        req = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                       self.rfile.read(length))
        status, body = self.server.fake.answer(req)  # type: ignore[attr-defined]
        data = json.dumps(body, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet
