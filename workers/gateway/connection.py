"""One gateway session of one Discord account (v9, zlib-stream), as §4.5 describes the web client's.

HELLO → IDENTIFY (or RESUME with the kept session id and sequence) → dispatches. Heartbeats
go out every `heartbeat_interval` (the first after a random jitter); a heartbeat whose
predecessor was never ACKed means the link is dead: the session ends to be resumed. op 7
(reconnect) ends it to be resumed, op 9 (invalid session) to identify anew. A close code
Discord does not allow resuming from (4004 Authentication failed, 4010–4014, or any other
code ≥ 4000 not in RESUMABLE_CLOSE_CODES) ends it as fatal: the account is retired.

Inbound frames are one zlib stream per connection: bytes are fed to one decompressobj and
a message is complete when the buffer ends with 00 00 ff ff.
"""
from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

log = logging.getLogger(__name__)

ZLIB_SUFFIX = b"\x00\x00\xff\xff"
GATEWAY_QUERY = "/?encoding=json&v=9&compress=zlib-stream"
#: Close codes after which Discord lets a client reconnect (4007 and 4009 with a new IDENTIFY).
RESUMABLE_CLOSE_CODES = frozenset({4000, 4001, 4002, 4003, 4005, 4007, 4008, 4009})
REIDENTIFY_CLOSE_CODES = frozenset({4007, 4009})
#: Longest wait for HELLO and for READY/RESUMED after connecting, seconds.
HANDSHAKE_TIMEOUT_SECONDS = 20.0
#: The receive loop wakes at least this often to notice a stop request, seconds.
WAKE_SECONDS = 1.0
#: Dispatches the executor needs; MESSAGE_* are filtered by channel and author as well.
INTERACTION_EVENTS = frozenset({"INTERACTION_CREATE", "INTERACTION_SUCCESS", "INTERACTION_FAILURE",
                                "INTERACTION_MODAL_CREATE", "INTERACTION_IFRAME_MODAL_CREATE"})
MESSAGE_EVENTS = frozenset({"MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"})
#: Bots whose DMs matter (Midjourney, niji, InsightFace).
BOT_IDS = frozenset({"936929561302675456", "1022952195194359889", "1090660574196674713"})

# Outcomes of a session.
RESUME, REIDENTIFY, FATAL, LOST, STOPPED = "resume", "reidentify", "fatal", "lost", "stopped"


@dataclass
class Outcome:
    kind: str
    reason: str = ""
    code: int | None = None
    ready: bool = False  # whether the session reached READY/RESUMED (for backoff)


@dataclass
class ResumePoint:
    session_id: str
    seq: int
    url: str

    def to_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "seq": self.seq, "url": self.url}


@dataclass
class AccountLink:
    """What a connection needs of the account."""

    account_id: str
    token: str
    channel_id: str
    user_agent: str


def identify_payload(token: str, user_agent: str) -> dict[str, Any]:
    """IDENTIFY `d` as the Discord web client sends it (§4.5); browser fields parsed from the User-Agent."""
    browser, version = "Chrome", ""
    for name, pattern in (("Edge", r"Edg/([\d.]+)"), ("Firefox", r"Firefox/([\d.]+)"),
                          ("Chrome", r"Chrome/([\d.]+)"), ("Safari", r"Version/([\d.]+).*Safari")):
        match = re.search(pattern, user_agent)
        if match:
            browser, version = name, match[1]
            break
    os_name = next((o for k, o in (("Windows", "Windows"), ("Mac OS X", "Mac OS X"), ("Linux", "Linux"))
                    if k in user_agent), "Mac OS X")
    return {
        "token": token, "capabilities": 16381, "compress": False,
        "presence": {"status": "online", "since": 0, "activities": [], "afk": False},
        "client_state": {"guild_versions": {}, "highest_last_message_id": "0", "read_state_version": 0,
                         "user_guild_settings_version": -1, "user_settings_version": -1,
                         "private_channels_version": "0", "api_code_version": 0},
        "properties": {"browser": browser, "browser_user_agent": user_agent, "browser_version": version,
                       "os": os_name, "device": "", "client_build_number": 222963, "client_event_source": None,
                       "referer": "https://www.midjourney.com", "referring_domain": "www.midjourney.com",
                       "referrer_current": "", "referring_domain_current": "", "release_channel": "stable",
                       "system_locale": "zh-CN"},
    }


@dataclass
class GatewayConnection:
    """Runs one session until it ends; `publish(type, data, resume)` returns False once fenced out."""

    link: AccountLink
    base_url: str
    publish: Callable[[str, dict[str, Any], ResumePoint], bool]
    save_resume: Callable[[ResumePoint], bool]
    stop: threading.Event
    resume: ResumePoint | None = None
    clock: Callable[[], float] = time.monotonic
    dm_channels: set[str] = field(default_factory=set)

    def run(self) -> Outcome:
        url = (self.resume.url if self.resume else self.base_url).rstrip("/") + GATEWAY_QUERY
        try:
            ws = connect(url, user_agent_header=self.link.user_agent, compression=None, open_timeout=15,
                         ping_interval=None, close_timeout=3, max_size=64 * 1024 * 1024, proxy=None,
                         additional_headers={"Accept-Language": "zh-CN", "Accept-Encoding": "gzip, deflate, br"})
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return Outcome(RESUME if self.resume else REIDENTIFY, f"connect failed: {type(exc).__name__}: {exc}")
        with ws:
            return self._session(ws)

    def _session(self, ws: ClientConnection) -> Outcome:
        inflater = zlib.decompressobj()
        buffer = bytearray()
        ready = False
        seq = self.resume.seq if self.resume else 0
        session_id = self.resume.session_id if self.resume else ""
        resume_url = self.resume.url if self.resume else self.base_url
        interval = 0.0
        next_beat = float("inf")
        acked = True
        deadline = self.clock() + HANDSHAKE_TIMEOUT_SECONDS

        def point() -> ResumePoint:
            return ResumePoint(session_id, seq, resume_url)

        def beat() -> None:
            nonlocal acked, next_beat
            ws.send(json.dumps({"op": 1, "d": seq or None}))
            acked, next_beat = False, self.clock() + interval

        try:
            while True:
                if self.stop.is_set():
                    ws.close(4000, "mjq gateway stopping")  # not 1000: the session stays resumable for the next holder
                    return Outcome(STOPPED, ready=ready)
                now = self.clock()
                if not ready and now > deadline:
                    return Outcome(RESUME if self.resume else REIDENTIFY, "no READY in time", ready=ready)
                if now >= next_beat:
                    if not acked:
                        ws.close(4000, "heartbeat not acknowledged")
                        return Outcome(RESUME, "missed heartbeat ACK", ready=ready)
                    beat()
                try:
                    raw = ws.recv(timeout=max(0.01, min(next_beat - self.clock(), WAKE_SECONDS)))
                except TimeoutError:
                    continue
                if isinstance(raw, bytes):
                    buffer.extend(raw)
                    if not buffer.endswith(ZLIB_SUFFIX):
                        continue
                    text = inflater.decompress(bytes(buffer)).decode()
                    buffer.clear()
                else:
                    text = raw
                frame = json.loads(text)
                op, data = frame.get("op"), frame.get("d")
                if frame.get("s") is not None:
                    seq = int(frame["s"])
                if op == 10:
                    interval = float(data["heartbeat_interval"]) / 1000.0
                    next_beat = self.clock() + interval * random.random()
                    if self.resume:
                        ws.send(json.dumps({"op": 6, "d": {"token": self.link.token, "session_id": session_id,
                                                           "seq": seq}}))
                    else:
                        ws.send(json.dumps({"op": 2, "d": identify_payload(self.link.token, self.link.user_agent)}))
                elif op == 11:
                    acked = True
                elif op == 1:
                    beat()
                elif op == 7:
                    ws.close(4000, "reconnect requested")
                    return Outcome(RESUME, "op 7 reconnect", ready=ready)
                elif op == 9:
                    return Outcome(RESUME if data else REIDENTIFY, "op 9 invalid session", ready=ready)
                elif op == 0:
                    kind = str(frame.get("t"))
                    if kind == "READY":
                        session_id = str(data["session_id"])
                        resume_url = str(data.get("resume_gateway_url") or self.base_url)
                        self.dm_channels.update(str(c["id"]) for c in data.get("private_channels") or []
                                                if set(map(str, c.get("recipient_ids") or [])) & BOT_IDS)
                    if kind in ("READY", "RESUMED"):
                        ready = True
                        log.info("gateway %s: %s (session %s, seq %s)", self.link.account_id, kind.lower(),
                                 session_id, seq)
                        if not self.save_resume(point()):
                            return Outcome(LOST, "ownership lost", ready=ready)
                    elif self._wanted(kind, data) and not self.publish(kind, data, point()):
                        return Outcome(LOST, "ownership lost", ready=ready)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else "connection lost"
            if code is not None and code >= 4000 and code not in RESUMABLE_CLOSE_CODES:
                return Outcome(FATAL, reason or "closed", code, ready)
            kind = REIDENTIFY if code in REIDENTIFY_CLOSE_CODES else RESUME
            return Outcome(kind, f"closed {code}: {reason}", code, ready)

    def _wanted(self, kind: str, data: Any) -> bool:
        if kind in INTERACTION_EVENTS:
            return True
        if kind not in MESSAGE_EVENTS or not isinstance(data, dict):
            return False
        channel = str(data.get("channel_id") or "")
        author = str((data.get("author") or {}).get("id") or "")
        return channel == self.link.channel_id or channel in self.dm_channels or author in BOT_IDS
