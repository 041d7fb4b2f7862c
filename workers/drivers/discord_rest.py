"""Discord's REST API as a user account calls it for Midjourney (§4.2): interactions, uploads, DMs.

- `Authorization` is the raw user token (no `Bot`/`Bearer`); every call sends the account's
  User-Agent. An interaction succeeded only on HTTP 204; any other answer fails the job with
  Discord's error `message` as failReason.
- 429: `retry_after` is obeyed per account across every process through a Redis key whose
  TTL is the wait (in-process when there is no Redis), then the call is retried.
- Command ids and versions come from the guild's application-command index, cached in Redis
  for COMMAND_CACHE_SECONDS, with the reference's table as fallback. A stale version
  (`INTERACTION_APPLICATION_COMMAND_INVALID_VERSION`, `Invalid Form Body`) refreshes the
  index once and retries once.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import requests
from redis import Redis
from redis.exceptions import RedisError

from workers.drivers.base import UpstreamError
from workers.drivers.discord_payloads import FALLBACK_COMMANDS, Command, attachment, option, slash

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/112.0.0.0 Safari/537.36")
#: Connect and read timeout of one REST call, seconds.
REST_TIMEOUT_SECONDS = 30.0
#: How long a read command index is trusted, seconds.
COMMAND_CACHE_SECONDS = 3600
#: Calls retried after a 429 at most, per call.
MAX_RATE_LIMIT_RETRIES = 5
#: Longest 429 wait obeyed inside one call, seconds (longer ones fail the job with the reason).
MAX_RETRY_AFTER_SECONDS = 60.0
STALE_VERSION = "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION"
#: Waits before each further try of a result's CDN download that failed on the way (unreachable, a timeout,
#: a 5xx), seconds: the picture Midjourney already made (and charged for) is not given up on one hiccup.
#: Previews are tried once: one that fails is skipped, and the job's events wait for no retry.
DOWNLOAD_RETRY_SECONDS = (0.5, 2.0, 5.0)
#: Where upload slots point, and the CDN hosts attachments come from (rewritten when configured).
UPLOAD_HOST = "https://discord-attachments-uploads-prd.storage.googleapis.com"
CDN_HOSTS = ("https://cdn.discordapp.com", "https://media.discordapp.net")


class DiscordRequestFailed(UpstreamError):
    """Discord refused a call; the message is Discord's own (`message`), which becomes the failReason."""

    def __init__(self, message: str, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class DiscordUrls:
    """Base URLs; Discord's real ones by default, a reverse proxy or the tests' fake otherwise."""

    api: str = "https://discord.com"
    gateway: str = "wss://gateway.discord.gg"
    cdn: str = ""       # when set, replaces the CDN hosts of attachment URLs before download
    upload: str = ""    # when set, replaces the upload host of upload slots
    inpaint: str = "https://936929561302675456.discordsays.com"


class RateGate:
    """Per-account pause after a 429, shared by every process through Redis (`PX` = the wait)."""

    def __init__(self, redis: Redis | None, account_id: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self.redis = redis
        self.key = f"mjq:discord:{account_id}:retry-after"
        self.sleep = sleep
        self._until = 0.0  # monotonic seconds, when Redis is absent or down

    def wait(self) -> None:
        """Sleep while the account is paused."""
        left_ms = 0
        if self.redis is not None:
            try:
                left_ms = max(int(cast(int, self.redis.pttl(self.key))), 0)
            except RedisError:
                left_ms = 0
        left = max(left_ms / 1000.0, self._until - time.monotonic())
        if left > 0:
            self.sleep(left)

    def pause(self, seconds: float) -> None:
        self._until = max(self._until, time.monotonic() + seconds)
        if self.redis is not None:
            try:
                self.redis.set(self.key, 1, px=max(int(seconds * 1000), 1))
            except RedisError as exc:
                log.warning("rate limit kept in-process only: %s", exc)


class DiscordRest:
    """One account's REST client. `session` is a requests.Session (passed in, shared per process)."""

    def __init__(self, session: requests.Session, urls: DiscordUrls, token: str, guild_id: str, channel_id: str,
                 user_agent: str = "", redis: Redis | None = None, account_id: str = "",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.http = session
        self.urls = urls
        self.token = token
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_agent = user_agent or DEFAULT_USER_AGENT
        self.redis = redis
        self.gate = RateGate(redis, account_id, sleep)
        self.sleep = sleep
        self._commands: dict[str, Command] | None = None

    # -- plumbing -------------------------------------------------------------------------
    def _headers(self, auth: bool = True) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent}
        if auth:
            headers["Authorization"] = self.token
        return headers

    def call(self, method: str, path_or_url: str, json_body: Any = None, data: bytes | None = None,
             headers: dict[str, str] | None = None, auth: bool = True) -> requests.Response:
        """One request with the account's headers; waits out 429s. Raises DiscordRequestFailed."""
        url = path_or_url if "://" in path_or_url else f"{self.urls.api}{path_or_url}"
        for _ in range(MAX_RATE_LIMIT_RETRIES + 1):
            self.gate.wait()
            try:
                resp = self.http.request(method, url, json=json_body, data=data,
                                         headers={**self._headers(auth), **(headers or {})},
                                         timeout=REST_TIMEOUT_SECONDS)
            except requests.RequestException as exc:
                raise DiscordRequestFailed(f"Discord is unreachable: {type(exc).__name__}") from None
            if resp.status_code != 429:
                return resp
            retry_after = _retry_after(resp)
            if retry_after > MAX_RETRY_AFTER_SECONDS:
                raise DiscordRequestFailed(f"rate limited by Discord for {retry_after:.0f} s", 429, resp.text)
            log.info("Discord 429 on %s %s: waiting %.2f s", method, url.split("?")[0], retry_after)
            self.gate.pause(retry_after)
        raise DiscordRequestFailed("rate limited by Discord too many times in a row", 429)

    def interact(self, payload: dict[str, Any]) -> None:
        """POST /api/v9/interactions; only 204 is success. Raises DiscordRequestFailed with Discord's message."""
        resp = self.call("POST", "/api/v9/interactions", json_body=payload)
        if resp.status_code == 204:
            return
        raise DiscordRequestFailed(_error_message(resp), resp.status_code, resp.text[:2000])

    # -- commands -------------------------------------------------------------------------
    def command(self, app: str, name: str, refresh: bool = False) -> Command:
        """Id and version of `/name` of bot `app`: the guild's index (cached), else the fallback table."""
        if self._commands is None or refresh:
            self._commands = self._command_index(refresh)
        found = self._commands.get(f"{app}:{name}") or FALLBACK_COMMANDS.get((app, name))
        if found is None:
            raise UpstreamError(f"the guild has no /{name} command of application {app}")
        return found

    def _command_index(self, refresh: bool) -> dict[str, Command]:
        key = f"mjq:discord:commands:{self.guild_id}"
        if self.redis is not None and not refresh:
            try:
                cached = cast("bytes | None", self.redis.get(key))
                if cached:
                    return {k: Command(*v) for k, v in json.loads(cached).items()}
            except RedisError:
                pass
        try:
            resp = self.call("GET", f"/api/v9/guilds/{self.guild_id}/application-command-index")
            index = resp.json() if resp.status_code == 200 else {}
        except (DiscordRequestFailed, ValueError) as exc:
            log.warning("command index of guild %s unreadable (%s); using the fallback table", self.guild_id, exc)
            index = {}
        found = {f"{c['application_id']}:{c['name']}": Command(str(c["id"]), str(c["version"]))
                 for c in index.get("application_commands") or [] if c.get("name") and c.get("id")}
        if found and self.redis is not None:
            try:
                self.redis.set(key, json.dumps({k: [c.id, c.version] for k, c in found.items()}),
                               ex=COMMAND_CACHE_SECONDS)
            except RedisError:
                pass
        return found

    def slash_command(self, app: str, name: str, options: list[dict[str, Any]], nonce: str,
                      attachments: list[dict[str, Any]] | None = None, channel_id: str | None = None,
                      in_guild: bool = True) -> None:
        """Run `/name options`; a stale command version refreshes the index once and retries once."""
        for refresh in (False, True):
            payload = slash(app, self.command(app, name, refresh), name, options, nonce,
                            channel_id or self.channel_id, self.guild_id if in_guild else None, attachments)
            try:
                self.interact(payload)
                return
            except DiscordRequestFailed as exc:
                stale = exc.status == 400 and (STALE_VERSION in exc.body or str(exc) == "Invalid Form Body")
                if not stale or refresh:
                    raise
                log.warning("/%s version %s is stale; reading the command index again", name,
                            payload["data"]["version"])

    # -- files ----------------------------------------------------------------------------
    def upload(self, filename: str, data: bytes, content_type: str) -> str:
        """Upload bytes through an attachment slot; returns the slot's `upload_filename`."""
        resp = self.call("POST", f"/api/v9/channels/{self.channel_id}/attachments",
                         json_body={"files": [{"filename": filename, "file_size": len(data), "id": "0"}]})
        if resp.status_code != 200:
            raise DiscordRequestFailed(f"upload to Discord failed: {_error_message(resp)}", resp.status_code)
        slot = resp.json()["attachments"][0]
        url = str(slot["upload_url"])
        if self.urls.upload:
            url = url.replace(UPLOAD_HOST, self.urls.upload)
        put = self.call("PUT", url, data=data, headers={"Content-Type": content_type}, auth=False)
        if put.status_code not in (200, 201, 204):
            raise DiscordRequestFailed(f"upload to Discord failed: HTTP {put.status_code}", put.status_code)
        return str(slot["upload_filename"])

    def post_image_message(self, filename: str, uploaded_filename: str) -> str:
        """Post an uploaded image to the channel (imagine pad images); returns its CDN URL."""
        resp = self.call("POST", f"/api/v9/channels/{self.channel_id}/messages", json_body={
            "content": f"upload image: {uploaded_filename}", "channel_id": self.channel_id, "type": 0,
            "sticker_ids": [], "attachments": [attachment(0, filename, uploaded_filename)]})
        if resp.status_code != 200:
            raise DiscordRequestFailed(f"posting the image failed: {_error_message(resp)}", resp.status_code)
        return str(resp.json()["attachments"][0]["url"])

    def download(self, url: str, retries: tuple[float, ...] = ()) -> bytes:
        """The bytes of an attachment (CDN host rewritten when configured), tried again after each of `retries`
        seconds when it fails on the way (unreachable, a timeout, a 5xx). Raises DiscordRequestFailed."""
        if self.urls.cdn:
            for host in CDN_HOSTS:
                url = url.replace(host, self.urls.cdn)
        for wait in retries:
            try:
                return self._download_once(url)
            except DiscordRequestFailed as exc:
                if not (exc.status in (0, 408) or exc.status >= 500):
                    raise
                log.info("download of %s failed (%s); trying again in %.1f s", url.split("?")[0], exc, wait)
            self.sleep(wait)
        return self._download_once(url)

    def _download_once(self, url: str) -> bytes:
        resp = self.call("GET", url, auth=False)
        if resp.status_code != 200:
            raise DiscordRequestFailed(f"downloading the result failed: HTTP {resp.status_code}", resp.status_code)
        return resp.content

    # -- Plus extras ----------------------------------------------------------------------
    def inpaint_submit(self, iframe_token: str, mask_base64: str, prompt: str) -> None:
        """Vary (Region): send the mask to Midjourney's iframe app. Raises DiscordRequestFailed."""
        resp = self.call("POST", f"{self.urls.inpaint}/inpaint/api/submit-job", auth=False, json_body={
            "customId": iframe_token, "mask": mask_base64, "prompt": prompt, "userId": "0", "username": "0"})
        if resp.status_code != 200:
            raise DiscordRequestFailed(f"Vary (Region) submit failed: HTTP {resp.status_code}", resp.status_code)

    def open_dm(self, recipient_id: str) -> str:
        """The DM channel with a bot (opened if needed); returns its channel id."""
        resp = self.call("POST", "/api/v9/users/@me/channels", json_body={"recipients": [recipient_id]})
        if resp.status_code != 200:
            raise DiscordRequestFailed(f"opening the DM failed: {_error_message(resp)}", resp.status_code)
        return str(resp.json()["id"])

    def react(self, channel_id: str, message_id: str, emoji: str) -> None:
        """Add `emoji` as the account's reaction (✉️ asks Midjourney for a job's details by DM)."""
        path = (f"/api/v9/channels/{channel_id}/messages/{message_id}/reactions/{quote(emoji)}/%40me"
                "?location=Message&type=0")
        resp = self.call("PUT", path)
        if resp.status_code != 204:
            raise DiscordRequestFailed(f"reaction failed: {_error_message(resp)}", resp.status_code)


def image_option(name: str, index: int) -> dict[str, Any]:
    return option(name, index, kind=11)


def _retry_after(resp: requests.Response) -> float:
    """Seconds to wait after a 429: the body's `retry_after`, else the Retry-After header, else 1 (never NaN)."""
    for read in (lambda: resp.json().get("retry_after", 1.0), lambda: resp.headers.get("Retry-After", "1") or 1):
        try:
            seconds = float(read())
        except (ValueError, TypeError, AttributeError):
            continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return 1.0


def _error_message(resp: requests.Response) -> str:
    """Discord's error `message` (e.g. `Invalid Form Body`), else the status and the start of the body."""
    try:
        body = resp.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    return f"HTTP {resp.status_code}: {resp.text[:100]}"
