"""HTTP calls to an upstream midjourney-proxy: another mjq, novicezk's, a Plus build, a relay.

Every call carries `mj-api-secret`. Submits answer HTTP 200 with the envelope
`{code, description, result, properties}`; this module turns each code into what the
driver does with it (midjourney-proxy-protocol.md §1.2):

| code | meaning upstream | here |
|---|---|---|
| 1, 22 | accepted (22: queued behind others) | `Answer` |
| 21 | a modal waits (`result` = the MODAL task) | `Answer`; the driver completes the modal |
| 23, 3 | queue full; no account (or the referenced task's account is down) | `UpstreamBusy` (base.py) |
| 24 | banned prompt | `UpstreamError` naming the word |
| 4, anything else | validation error, system error | `UpstreamError` with the description |

HTTP errors, timeouts and refused connections are `UpstreamError`s whose message says which.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from app import protocol
from workers.drivers.base import UpstreamBusy, UpstreamError

log = logging.getLogger(__name__)

#: Largest image copied from an upstream, in bytes (a 4x upscale PNG runs to tens of MB).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: Ids asked for in one list-by-condition call (midjourney-proxy lists accept up to 1000).
LIST_BATCH = 500
#: A base URL ending in one of these forces that mode upstream (trueai, new-api, mjq).
MODE_PREFIXES = {"/mj-fast": "FAST", "/mj-relax": "RELAX", "/mj-turbo": "TURBO"}
_BUSY_CODES = {protocol.CODE_QUEUE_REJECTED: "Queue full", protocol.CODE_NOT_FOUND: "Upstream unavailable"}
_DOWNLOAD_CHUNK_BYTES = 256 * 1024
_TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class UpstreamInvalid(UpstreamError):
    """Raised when the upstream refused a field of the request (code 4); `description` is its own words."""

    def __init__(self, message: str, description: str) -> None:
        super().__init__(message)
        self.description = description


@dataclass(frozen=True)
class Endpoint:
    """One upstream: its base URL (optionally with a mode prefix) and its API secret."""

    base_url: str
    secret: str | None = None

    @classmethod
    def of(cls, settings: dict[str, Any]) -> Endpoint:
        """The endpoint of an mjproxy account's settings (secrets merged). Raises UpstreamError without baseUrl."""
        base = str(settings.get("baseUrl") or "").strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise UpstreamError("the mjproxy account has no baseUrl (an http(s) URL of the upstream)")
        secret = settings.get("secret")
        return cls(base, str(secret) if secret else None)

    def url(self, path: str) -> str:
        """`path` (e.g. `/submit/imagine`) under the upstream's `/mj` context."""
        return f"{self.base_url}/mj{path}"

    @property
    def mode(self) -> str | None:
        """The mode the base URL's prefix forces, or None when it has none."""
        path = urlsplit(self.base_url).path.rstrip("/")
        return next((mode for prefix, mode in MODE_PREFIXES.items() if path.endswith(prefix)), None)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def headers(self) -> dict[str, str]:
        return {"mj-api-secret": self.secret} if self.secret else {}


@dataclass(frozen=True)
class Answer:
    """An accepted submit: the upstream's code (1, 21 or 22) and task id."""

    code: int
    task_id: str
    properties: dict[str, Any]


class UpstreamClient:
    """The calls mjq makes to upstreams, over one shared `requests.Session` (thread-safe for this use)."""

    def __init__(self, timeout_seconds: float, http: requests.Session | None = None) -> None:
        """`timeout_seconds`: connect and read timeout of each call; `http`: default, a pooled session of its own."""
        self.http = http or new_http_session()
        self.timeout_seconds = timeout_seconds

    def _post(self, endpoint: Endpoint, path: str, body: dict[str, Any]) -> Any:
        url = endpoint.url(path)
        try:
            resp = self.http.post(url, json=body, headers=endpoint.headers(), timeout=self.timeout_seconds)
        except requests.Timeout:
            raise UpstreamError(f"[Upstream timeout] {endpoint.host} did not answer POST /mj{path} within "
                                f"{self.timeout_seconds:g} s") from None
        except requests.RequestException as exc:
            raise UpstreamError(f"[Upstream unreachable] POST {url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 401:
            raise UpstreamError(f"[Upstream refused] {endpoint.host} answered HTTP 401 to POST /mj{path}: check the "
                                "account's secret")
        if resp.status_code != 200:
            raise UpstreamError(f"[Upstream error] {endpoint.host} answered HTTP {resp.status_code} to POST "
                                f"/mj{path}: {resp.text[:300]}")
        try:
            return resp.json()
        except ValueError:
            raise UpstreamError(f"[Upstream error] {endpoint.host} answered POST /mj{path} with something that is "
                                f"not JSON: {resp.text[:200]!r}") from None

    def submit(self, endpoint: Endpoint, path: str, body: dict[str, Any]) -> Answer:
        """POST a submit and read its envelope. Raises UpstreamBusy (23, 3) or UpstreamError (see module doc)."""
        envelope = self._post(endpoint, path, body)
        if not isinstance(envelope, dict):
            raise UpstreamError(f"[Upstream error] {endpoint.host} answered POST /mj{path} with {envelope!r:.200}")
        code = envelope.get("code")
        description = str(envelope.get("description") or "")
        raw_properties = envelope.get("properties")
        properties: dict[str, Any] = raw_properties if isinstance(raw_properties, dict) else {}
        if code in (protocol.CODE_SUCCESS, protocol.CODE_EXISTED, protocol.CODE_IN_QUEUE):
            task_id = str(envelope.get("result") or "")
            if not _TASK_ID_RE.match(task_id):
                raise UpstreamError(f"[Upstream error] {endpoint.host} accepted POST /mj{path} (code {code}) without "
                                    f"a usable task id: {envelope.get('result')!r:.100}")
            return Answer(int(code), task_id, properties)
        if code in _BUSY_CODES:
            raise UpstreamBusy(f"[{_BUSY_CODES[code]}] {endpoint.host}: {description or 'no reason given'} "
                               f"(code {code})")
        if code == protocol.CODE_BANNED_PROMPT:
            word = properties.get("bannedWord")
            raise UpstreamError(f"[Banned prompt detected] the upstream refused the prompt"
                                f"{f' for the word {word!r}' if word else ''}: {description} (code 24)")
        if code == protocol.CODE_VALIDATION_ERROR:
            raise UpstreamInvalid(f"[Invalid parameter] {endpoint.host}: {description} (code 4)", description)
        raise UpstreamError(f"[Upstream error] {endpoint.host}: {description or 'no description'} (code {code})")

    def list_tasks(self, endpoint: Endpoint, ids: list[str]) -> list[dict[str, Any]]:
        """The upstream's tasks among `ids` (unknown ids are left out), asked LIST_BATCH at a time.

        Raises UpstreamError when a call fails.
        """
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), LIST_BATCH):
            answer = self._post(endpoint, "/task/list-by-condition", {"ids": ids[start:start + LIST_BATCH]})
            if not isinstance(answer, list):
                raise UpstreamError(f"[Upstream error] {endpoint.host}: list-by-condition answered {answer!r:.200}")
            found.extend(task for task in answer if isinstance(task, dict))
        return found

    def cancel(self, endpoint: Endpoint, task_id: str) -> bool:
        """Ask the upstream to cancel `task_id` (a Plus/mjq endpoint; novicezk has none). True when it agreed."""
        try:
            answer = self._post(endpoint, f"/task/{task_id}/cancel", {})
        except UpstreamError as exc:
            log.info("upstream cancel of %s on %s failed: %s", task_id, endpoint.host, exc)
            return False
        return isinstance(answer, dict) and answer.get("code") == protocol.CODE_SUCCESS

    def download(self, url: str, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[bytes, str]:
        """The bytes and content type at `url` (no secret is sent: image hosts are often third parties).

        Raises UpstreamError on any HTTP failure or a body over `max_bytes`.
        """
        try:
            with self.http.get(url, timeout=self.timeout_seconds, stream=True) as resp:
                if resp.status_code != 200:
                    raise UpstreamError(f"[Upstream image] GET {url} answered HTTP {resp.status_code}")
                data = bytearray()
                for chunk in resp.iter_content(_DOWNLOAD_CHUNK_BYTES):
                    data += chunk
                    if len(data) > max_bytes:
                        raise UpstreamError(f"[Upstream image] {url} is larger than {max_bytes} bytes")
                return bytes(data), resp.headers.get("Content-Type", "")
        except requests.RequestException as exc:
            raise UpstreamError(f"[Upstream image] GET {url}: {type(exc).__name__}: {exc}") from None


def new_http_session(pool_size: int = 64) -> requests.Session:
    """A session whose connection pool fits many jobs following one upstream at once."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
