"""`mjq imagine|action|fetch|describe|blend`: the client side of the `mjq` command, over HTTP.

The server is MJQ_URL (else MJQ_PUBLIC_URL, else http://MJQ_HOST:MJQ_PORT) and the key
MJQ_API_KEY (else MJQ_API_SECRET): the same variables the server reads. `--wait` follows
the task over `/task/{id}/stream` (Server-Sent Events) with a progress bar on stderr;
stdout carries only results (task id, image URL, saved file), so scripts can read it.
Every failure is one `mjq: …` line on stderr and a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import requests

from config import MjqError, Settings

#: Seconds to connect, and to wait for any byte of a stream (the server sends a heartbeat every ~15 s).
CONNECT_SECONDS = 5.0
READ_SECONDS = 60.0
#: Times a broken stream is reopened (with Last-Event-ID) before giving up; seconds between tries.
RECONNECTS = 20
RECONNECT_PAUSE_SECONDS = 1.0
#: Protocol codes that mean "accepted": success, already existed, waiting in the queue.
ACCEPTED = {1: "submitted", 21: "already exists", 22: "waiting in the queue"}
#: What the refusal codes mean, for one-line errors.
REFUSALS = {3: "not found", 4: "validation error", 9: "failed", 23: "the queue is full, try later",
            24: "banned prompt"}
TERMINAL = {"SUCCESS", "FAILURE", "CANCEL"}
BAR_CELLS = 30


class ClientError(MjqError):
    """A client command failed; the message is the one line the user sees."""


class Unreachable(ClientError):
    """The server could not be reached or did not answer in time (a stream retries these)."""


class Client:
    """The mjq HTTP API as the CLI uses it (midjourney-proxy envelope in, task JSON out)."""

    def __init__(self, base_url: str, key: str, http: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or requests.Session()
        if key:
            self.http.headers["Authorization"] = f"Bearer {key}"

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        return cls(settings.client_url or settings.effective_public_url,
                   settings.client_api_key or settings.api_secret)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        kwargs.setdefault("timeout", (CONNECT_SECONDS, READ_SECONDS))
        try:
            response = self.http.request(method, url, **kwargs)
        except requests.ConnectionError:
            raise Unreachable(f"cannot reach mjq at {self.base_url} (set MJQ_URL or MJQ_PUBLIC_URL)") from None
        except requests.Timeout:
            raise Unreachable(f"mjq at {self.base_url} did not answer within {READ_SECONDS:.0f}s") from None
        if response.status_code == 401:
            raise ClientError("401 unauthorized: the server refused the key (set MJQ_API_KEY or MJQ_API_SECRET)")
        if response.status_code == 403:
            raise ClientError(f"403 forbidden: {self._description(response) or 'this key may not do that'}")
        return response

    @staticmethod
    def _description(response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return ""
        return str(body.get("description", "")) if isinstance(body, dict) else ""

    def submit(self, path: str, body: dict[str, Any]) -> str:
        """POST a submit body; returns the task id. Raises ClientError with the code's meaning."""
        response = self._request("POST", path, json=body)
        try:
            envelope = response.json()
        except ValueError:
            raise ClientError(f"HTTP {response.status_code} from {path}: not JSON") from None
        code = envelope.get("code") if isinstance(envelope, dict) else None
        if code in ACCEPTED and envelope.get("result"):
            if code != 1:
                print(f"mjq: task {envelope['result']}: {ACCEPTED[code]}", file=sys.stderr)
            return str(envelope["result"])
        meaning = REFUSALS.get(code, f"HTTP {response.status_code}") if isinstance(code, int) else \
            f"HTTP {response.status_code}"
        raise ClientError(f"refused (code {code}, {meaning}): {envelope.get('description', '')}".rstrip(": "))

    def fetch(self, task_id: str) -> dict[str, Any]:
        response = self._request("GET", f"/mj/task/{task_id}/fetch")
        if response.status_code == 404:
            raise ClientError(f"task {task_id} not found (code 3)")
        if not response.ok:
            raise ClientError(f"HTTP {response.status_code} fetching task {task_id}")
        return dict(response.json())

    def follow(self, task_id: str) -> Iterator[dict[str, Any]]:
        """The task JSON on every change until a terminal state, over the event stream.

        A stream the server closes (its lifetime) or that breaks is reopened with Last-Event-ID.
        """
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
            try:
                response = self._request("GET", f"/mj/task/{task_id}/stream", headers=headers, stream=True)
                if response.status_code == 404:
                    raise ClientError(f"task {task_id} not found (code 3)")
                if not response.ok:
                    raise ClientError(f"HTTP {response.status_code} opening the stream of task {task_id}")
                if response.status_code == 204:  # finished, and we had its final event: read it once more
                    yield self.fetch(task_id)
                    return
                with response:
                    lines = (line.decode() for line in response.iter_lines())  # UTF-8, whatever the header says
                    for event_id, data in _events(lines):
                        last_id = event_id or last_id
                        failures = 0
                        yield data
                        if data.get("status") in TERMINAL:
                            return
            except (Unreachable, requests.RequestException) as exc:
                failures += 1
                if failures > RECONNECTS:
                    raise ClientError(f"lost the stream of task {task_id}: {exc}") from None
            time.sleep(RECONNECT_PAUSE_SECONDS)

    def download(self, url: str, out: Path) -> int:
        """Save the image at `url` (absolute, or a path on this server) to `out`; returns its size in bytes."""
        full = url if "://" in url else f"{self.base_url}{url}"
        try:
            response = self.http.get(full, timeout=(CONNECT_SECONDS, READ_SECONDS))
        except requests.RequestException as exc:
            raise ClientError(f"cannot download {full}: {exc.__class__.__name__}") from None
        if not response.ok:
            raise ClientError(f"cannot download {full}: HTTP {response.status_code}")
        out.write_bytes(response.content)
        return len(response.content)


def _events(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(id, task JSON) of each `event: task` frame of an SSE body; comments and retry lines skipped."""
    event_id: str | None = None
    event, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data and event == "task":
                yield event_id, json.loads("\n".join(data))
            event, data = "message", []
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            event = value
        elif field == "data":
            data.append(value)


class ProgressBar:
    """The task's progress on `stream`: one redrawn bar on a terminal, one line per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown: tuple[str, str] | None = None

    def update(self, task: dict[str, Any]) -> None:
        status, progress = str(task.get("status")), str(task.get("progress") or "0%")
        if (status, progress) == self.shown:
            return
        self.shown = (status, progress)
        percent = _percent(progress)
        if self.tty:
            filled = BAR_CELLS * percent // 100
            bar = "█" * filled + "░" * (BAR_CELLS - filled)
            self.stream.write(f"\r\x1b[2K{task.get('id')} [{bar}] {percent:3d}% {status}")
        else:
            self.stream.write(f"task {task.get('id')} {status} {percent}%\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _percent(progress: str) -> int:
    digits = progress.strip().rstrip("%")
    try:
        return max(0, min(100, int(float(digits))))
    except ValueError:
        return 0


def _data_url(path: str) -> str:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    mime = mimetypes.guess_type(file.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def _prefix(args: argparse.Namespace) -> str:
    mode = getattr(args, "mode", None)
    return f"/mj-{mode}/mj" if mode else "/mj"


def _finish(client: Client, args: argparse.Namespace, task_id: str) -> int:
    """Print the task id; with --wait follow it to the end, print its result and save --out."""
    print(task_id)
    if not args.wait:
        return 0
    bar = ProgressBar(sys.stderr)
    final: dict[str, Any] = {}
    try:
        for final in client.follow(task_id):
            bar.update(final)
    finally:
        bar.finish()
    if final.get("status") != "SUCCESS":
        raise ClientError(f"task {task_id} {final.get('status')}: {final.get('failReason') or 'no reason given'}")
    if final.get("action") in ("DESCRIBE", "SHORTEN") and final.get("prompt"):
        print(final["prompt"])
    if final.get("imageUrl"):
        print(final["imageUrl"])
    if args.out:
        if not final.get("imageUrl"):
            raise ClientError(f"task {task_id} has no image to save")
        size = client.download(final["imageUrl"], Path(args.out))
        print(f"saved {args.out} ({size} bytes)", file=sys.stderr)
    return 0


def _resolve_button(task: dict[str, Any], wanted: str) -> str:
    """The customId a label names (U2, V1, R/🔄, "Zoom Out 2x"), or `wanted` when it is a customId."""
    buttons = task.get("buttons") or []
    if any(b.get("customId") == wanted for b in buttons):
        return wanted
    key = wanted.strip().lower()
    for b in buttons:
        label, emoji = str(b.get("label") or "").lower(), str(b.get("emoji") or "")
        if label and label == key or key in ("r", "reroll", "🔄") and emoji == "🔄" or emoji and emoji == wanted:
            return str(b["customId"])
    if wanted.startswith("MJ::"):
        return wanted  # a raw customId the task does not list (the server decides)
    names = ", ".join(b.get("label") or b.get("emoji") or b.get("customId") for b in buttons) or "none"
    raise ClientError(f"task {task.get('id')} has no button {wanted!r} (buttons: {names})")


def _imagine(args: argparse.Namespace) -> int:
    client = Client.from_settings(Settings.from_env())
    prompt = f"{args.prompt} --ar {args.ar}" if args.ar else args.prompt
    return _finish(client, args, client.submit(f"{_prefix(args)}/submit/imagine", {"prompt": prompt}))


def _action(args: argparse.Namespace) -> int:
    client = Client.from_settings(Settings.from_env())
    custom_id = _resolve_button(client.fetch(args.task_id), args.button)
    body = {"taskId": args.task_id, "customId": custom_id}
    return _finish(client, args, client.submit(f"{_prefix(args)}/submit/action", body))


def _fetch(args: argparse.Namespace) -> int:
    task = Client.from_settings(Settings.from_env()).fetch(args.task_id)
    print(json.dumps(task, indent=2, ensure_ascii=False))
    return 0


def _describe(args: argparse.Namespace) -> int:
    client = Client.from_settings(Settings.from_env())
    return _finish(client, args, client.submit(f"{_prefix(args)}/submit/describe", {"base64": _data_url(args.file)}))


def _blend(args: argparse.Namespace) -> int:
    client = Client.from_settings(Settings.from_env())
    body = {"base64Array": [_data_url(f) for f in args.files], "dimensions": args.dimensions}
    return _finish(client, args, client.submit(f"{_prefix(args)}/submit/blend", body))


def _guarded(handler: Any) -> Any:
    """Turn every expected failure into one `mjq: …` line and exit code 1."""
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except MjqError as exc:
            print(f"mjq: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("mjq: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            # stdout's reader left (`mjq imagine … | head -1`): stop quietly, as other Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
    return run


def _waiting(parser: argparse.ArgumentParser, modes: bool = True) -> None:
    if modes:
        parser.add_argument("--mode", choices=("fast", "relax", "turbo"), default=None,
                            help="submit through /mj-<mode>/mj (default: the server's MJQ_DEFAULT_MODE)")
    parser.add_argument("--wait", action="store_true", help="follow the task to its end with a progress bar")
    parser.add_argument("--out", default=None, metavar="FILE", help="with --wait: save the image to FILE")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the client commands to the `mjq` parser (they talk to a running mjq over HTTP)."""
    imagine = sub.add_parser("imagine", help="submit an imagine (client: MJQ_URL, MJQ_API_KEY)")
    imagine.add_argument("prompt")
    imagine.add_argument("--ar", default=None, help="aspect ratio, e.g. 16:9 (appended as --ar)")
    _waiting(imagine)
    imagine.set_defaults(func=_guarded(_imagine))
    action = sub.add_parser("action", help="click a button of a task: U1..U4, V1..V4, R (🔄), a label or a customId")
    action.add_argument("task_id")
    action.add_argument("button")
    _waiting(action)
    action.set_defaults(func=_guarded(_action))
    fetch = sub.add_parser("fetch", help="a task as pretty JSON")
    fetch.add_argument("task_id")
    fetch.set_defaults(func=_guarded(_fetch))
    describe = sub.add_parser("describe", help="describe an image file (prints the prompts with --wait)")
    describe.add_argument("file")
    _waiting(describe)
    describe.set_defaults(func=_guarded(_describe))
    blend = sub.add_parser("blend", help="blend 2-5 image files")
    blend.add_argument("files", nargs="+", metavar="FILE")
    blend.add_argument("--dimensions", choices=("PORTRAIT", "SQUARE", "LANDSCAPE"), default="SQUARE")
    _waiting(blend)
    blend.set_defaults(func=_guarded(_blend))
