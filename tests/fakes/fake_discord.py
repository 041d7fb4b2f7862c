"""A local Discord for tests: a real REST server and a real websocket gateway on loopback.

REST (werkzeug, threaded): interactions (204), attachment slots and uploads, channel
messages, the guild's application-command index, DMs and reactions, the CDN, and
Midjourney's inpaint iframe endpoint. Gateway (websockets, sync server): HELLO, IDENTIFY →
READY, heartbeats and ACKs, RESUME with the events missed since the given sequence, and
everything zlib-stream compressed when the URL asks for it (one compressor per connection,
each message flushed with Z_SYNC_FLUSH so it ends with 00 00 ff ff).

The Midjourney bot itself (what each interaction produces) lives in fake_discord_bot.py.
Tests steer faults: `reconnect(token)` (op 7), `invalidate(token)` (op 9),
`close(token, 4004, …)`, `rate_limit(n, seconds)` (429s), `redeploy()` (stale versions).

    with FakeDiscord() as fake:
        user = fake.add_user("token-1")
        ... point MJQ_DISCORD_API_URL at fake.url and MJQ_DISCORD_GATEWAY_URL at fake.gateway_url
"""
from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
import zlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask, Response, request
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.fakes.fake_discord_bot import FakeMidjourney
from workers.drivers.discord_payloads import FALLBACK_COMMANDS, INSIGHT_FACE_APP

GUILD_ID = "1123456789012345678"
#: Heartbeat interval the fake's HELLO announces, milliseconds (Discord's is ~41 s; tests want short).
HEARTBEAT_MS = 2000


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Connection:
    ws: ServerConnection
    compress: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    compressor: Any = field(default_factory=zlib.compressobj)

    def send(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        with self.lock:
            if self.compress:
                self.ws.send(self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH))
            else:
                self.ws.send(text)


@dataclass
class Session:
    """A gateway session: its events are numbered and kept so a RESUME can replay them."""

    id: str
    token: str
    seq: int = 0
    log: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    connection: Connection | None = None
    valid: bool = True


@dataclass
class User:
    token: str
    id: str
    channel_id: str
    dm_channel_id: str
    guild_id: str = GUILD_ID
    remix: bool = False
    revoked: bool = False


class FakeDiscord:
    """REST on `url`, gateway on `gateway_url`; both stop with the context manager."""

    def __init__(self, job_seconds: float = 1.2, heartbeat_ms: int = HEARTBEAT_MS) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.users: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        self.lock = threading.RLock()
        self.interactions: list[dict[str, Any]] = []
        self.identifies = 0
        #: False makes the gateway ignore heartbeats (a dead link the client must notice).
        self.ack_heartbeats = True
        self.resumes = 0
        self._ids = itertools.count(int(time.time() * 1000 - 1420070400000) << 22)
        self._rate_limits: list[float] = []
        self.versions = {key: cmd.version for key, cmd in FALLBACK_COMMANDS.items()}
        self.versions[(INSIGHT_FACE_APP, "saveid")] = "1100000000000000001"
        self.versions[(INSIGHT_FACE_APP, "swapid")] = "1100000000000000002"
        self.bot = FakeMidjourney(self, job_seconds)
        self._http = make_server("127.0.0.1", 0, self._rest_app(), threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._http.socket.getsockname()[1]}"
        self._ws = serve(self._gateway, "127.0.0.1", 0, compression=None, ping_interval=None)
        self.gateway_url = f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._http.serve_forever, daemon=True),
                         threading.Thread(target=self._ws.serve_forever, daemon=True)]
        for t in self._threads:
            t.start()

    def __enter__(self) -> FakeDiscord:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self.bot.stop()
        self._http.shutdown()
        self._ws.shutdown()

    # -- state -----------------------------------------------------------------------------
    def snowflake(self) -> str:
        return str(next(self._ids))

    def add_user(self, token: str, remix: bool = False) -> User:
        user = User(token, self.snowflake(), self.snowflake(), self.snowflake(), remix=remix)
        with self.lock:
            self.users[token] = user
        return user

    def dispatch(self, user: User, event_type: str, data: dict[str, Any]) -> None:
        """Send a dispatch (op 0) to every live session of `user`; sessions without a connection keep it."""
        with self.lock:
            targets = [s for s in self.sessions.values() if s.token == user.token and s.valid]
            for session in targets:
                session.seq += 1
                session.log.append((session.seq, event_type, data))
                if session.connection is not None:
                    try:
                        session.connection.send({"op": 0, "t": event_type, "s": session.seq, "d": data})
                    except ConnectionClosed:
                        session.connection = None

    def interaction_count(self, nonce: str) -> int:
        return sum(1 for p in self.interactions if p.get("nonce") == nonce)

    # -- steering --------------------------------------------------------------------------
    def reconnect(self, token: str) -> None:
        """op 7: the client must reconnect and RESUME."""
        self._control(token, {"op": 7, "d": None})

    def invalidate(self, token: str) -> None:
        """op 9 (not resumable): the session ends; the client must IDENTIFY again."""
        with self.lock:
            sessions = [s for s in self.sessions.values() if s.token == token and s.valid]
            for s in sessions:
                s.valid = False
        for s in sessions:
            if s.connection is not None:
                s.connection.send({"op": 9, "d": False})

    def close(self, token: str, code: int = 4004, reason: str = "Authentication failed") -> None:
        """Close the user's connections with `code`; 4004 also revokes the token (it never works again)."""
        with self.lock:
            if code == 4004 and token in self.users:
                self.users[token].revoked = True
            conns = [s.connection for s in self.sessions.values() if s.token == token and s.connection]
        for conn in conns:
            conn.ws.close(code, reason)

    def rate_limit(self, times: int, retry_after: float) -> None:
        """The next `times` interaction POSTs answer 429 with `retry_after` seconds."""
        with self.lock:
            self._rate_limits.extend([retry_after] * times)

    def redeploy(self) -> None:
        """Midjourney redeployed: every command gets a new version; old versions are refused."""
        with self.lock:
            for key in self.versions:
                self.versions[key] = str(int(self.versions[key]) + 1000)

    def connected(self, token: str) -> int:
        with self.lock:
            return sum(1 for s in self.sessions.values() if s.token == token and s.connection is not None)

    def _control(self, token: str, payload: dict[str, Any]) -> None:
        with self.lock:
            conns = [s.connection for s in self.sessions.values() if s.token == token and s.connection]
        for conn in conns:
            conn.send(payload)

    # -- gateway ---------------------------------------------------------------------------
    def _gateway(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "/").query)
        conn = Connection(ws, compress=query.get("compress", [""])[0] == "zlib-stream")
        session: Session | None = None
        conn.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}})
        try:
            for raw in ws:
                frame = json.loads(raw)
                op, d = frame.get("op"), frame.get("d") or {}
                if op == 1 and self.ack_heartbeats:
                    conn.send({"op": 11})
                elif op == 2:
                    session = self._identify(conn, d)
                    if session is None:
                        return
                elif op == 6:
                    session = self._resume(conn, d)
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                if session is not None and session.connection is conn:
                    session.connection = None

    def _identify(self, conn: Connection, d: dict[str, Any]) -> Session | None:
        user = self.users.get(str(d.get("token")))
        if user is None or user.revoked:
            conn.ws.close(4004, "Authentication failed")
            return None
        with self.lock:
            self.identifies += 1
            session = Session(secrets.token_hex(16), user.token, connection=conn)
            self.sessions[session.id] = session
            session.seq += 1
            seq = session.seq
        conn.send({"op": 0, "t": "READY", "s": seq, "d": {
            "session_id": session.id, "resume_gateway_url": self.gateway_url, "user": {"id": user.id},
            "private_channels": [{"id": user.dm_channel_id, "type": 1,
                                  "recipient_ids": ["936929561302675456"]}]}})
        return session

    def _resume(self, conn: Connection, d: dict[str, Any]) -> Session | None:
        with self.lock:
            session = self.sessions.get(str(d.get("session_id")))
            user = self.users.get(str(d.get("token")))
            ok = session is not None and session.valid and user is not None and not user.revoked \
                and session.token == user.token
            if not ok or session is None:
                conn.send({"op": 9, "d": False})
                return None
            self.resumes += 1
            missed = [entry for entry in session.log if entry[0] > int(d.get("seq") or 0)]
            session.connection = conn
            for seq, event_type, data in missed:
                conn.send({"op": 0, "t": event_type, "s": seq, "d": data})
            session.seq += 1
            conn.send({"op": 0, "t": "RESUMED", "s": session.seq, "d": {}})
        return session

    # -- REST ------------------------------------------------------------------------------
    def _user(self) -> User | None:
        user = self.users.get(request.headers.get("Authorization", ""))
        return None if user is None or user.revoked else user

    def _rest_app(self) -> Flask:
        app = Flask("fake_discord")
        unauthorized = Response(json.dumps({"message": "401: Unauthorized", "code": 0}), 401,
                                mimetype="application/json")

        def answer(body: Any, status: int = 200) -> Response:
            return Response(json.dumps(body), status, mimetype="application/json")

        @app.post("/api/v9/interactions")
        def interactions() -> Response:
            user = self._user()
            if user is None:
                return unauthorized
            with self.lock:
                wait = self._rate_limits.pop(0) if self._rate_limits else None
            if wait is not None:
                return answer({"message": "You are being rate limited.", "retry_after": wait, "global": False}, 429)
            payload = request.get_json(force=True)
            if payload.get("type") == 2:
                data = payload.get("data") or {}
                current = self.versions.get((str(payload.get("application_id")), str(data.get("name"))))
                if current is None or current != str(data.get("version")):
                    return answer({"code": 50035, "message": "Invalid Form Body", "errors": {"data": {"_errors": [
                        {"code": "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION",
                         "message": "This command is outdated, please try again in a few minutes"}]}}}, 400)
            with self.lock:
                self.interactions.append(payload)
            error = self.bot.interaction(user, payload)
            if error:
                return answer({"code": 10062, "message": error}, 404)
            return Response(status=204)

        @app.get("/api/v9/guilds/<guild>/application-command-index")
        def command_index(guild: str) -> Response:
            if self._user() is None:
                return unauthorized
            with self.lock:
                commands = [{"id": FALLBACK_COMMANDS[key].id if key in FALLBACK_COMMANDS else str(90 + i),
                             "application_id": key[0], "name": key[1], "version": version, "type": 1}
                            for i, (key, version) in enumerate(self.versions.items())]
            return answer({"applications": [], "application_commands": commands, "version": "1"})

        @app.post("/api/v9/channels/<channel>/attachments")
        def attachment_slots(channel: str) -> Response:
            if self._user() is None:
                return unauthorized
            files = request.get_json(force=True)["files"]
            slots = []
            for f in files:
                name = f"{secrets.token_hex(8)}/{f['filename']}"
                slots.append({"id": f["id"], "upload_url": f"{self.url}/upload/{name}?upload_id=x",
                              "upload_filename": name})
            return answer({"attachments": slots})

        @app.put("/upload/<path:name>")
        def upload(name: str) -> Response:
            self.bot.files[f"uploads/{name}"] = request.get_data()
            return Response(status=200)

        @app.post("/api/v9/channels/<channel>/messages")
        def post_message(channel: str) -> Response:
            user = self._user()
            if user is None:
                return unauthorized
            body = request.get_json(force=True)
            uploaded = body["attachments"][0]["uploaded_filename"]
            message = self.bot.store_upload_message(user, channel, uploaded, body["attachments"][0]["filename"])
            return answer(message)

        @app.get("/attachments/<path:path>")
        def cdn(path: str) -> Response:
            data = self.bot.files.get(path)
            if data is None:
                return Response(status=404)
            return Response(data, 200, mimetype="image/webp" if path.endswith(".webp") else "image/png")

        @app.post("/api/v9/users/@me/channels")
        def open_dm() -> Response:
            user = self._user()
            if user is None:
                return unauthorized
            return answer({"id": user.dm_channel_id, "type": 1})

        @app.put("/api/v9/channels/<channel>/messages/<message_id>/reactions/<emoji>/<me>")
        def react(channel: str, message_id: str, emoji: str, me: str) -> Response:
            user = self._user()
            if user is None:
                return unauthorized
            self.bot.reaction(user, channel, message_id, emoji)
            return Response(status=204)

        @app.post("/inpaint/api/submit-job")
        def inpaint() -> Response:
            ok = self.bot.inpaint(request.get_json(force=True))
            return answer({"success": ok}, 200 if ok else 400)

        return app
