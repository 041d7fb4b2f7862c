"""How a following worker hears about its upstream task: notify hooks through Redis, polls as the fallback.

Upstreams POST every change of a task to the notify hook mjq gave them
(`/internal/mjproxy/<account>/notify?sig=…`, app/api/internal.py), which publishes the task
JSON on the Redis channel `mjq:upstream:<account>`: any worker on any host may be the one
following that task. Pub/sub drops what nobody was listening to (a worker restarting, Redis
down, an upstream that never calls back), so each process also polls: every
MJQ_MJPROXY_POLL_SECONDS, one `list-by-condition` per account for all the tasks it follows there.

`UpstreamWatch` is that per-process hub: one pattern subscription and one poller thread,
started with the first watch, and a mailbox per followed task. Events can arrive twice or
out of order (a poll answer overtaken by a hook); the follower keeps only newer ones.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from app import protocol
from config import Settings
from workers.drivers.base import UpstreamError
from workers.drivers.mjproxy_client import Endpoint, UpstreamClient

log = logging.getLogger(__name__)

#: Redis channel of one mjproxy account's upstream events (`{account}` is the account id).
UPSTREAM_CHANNEL = "mjq:upstream:{account}"
UPSTREAM_PATTERN = "mjq:upstream:*"
#: Path of the notify hook under mjq's callback URL; `{account}` is the account id.
NOTIFY_PATH = "/internal/mjproxy/{account}/notify"
#: Seconds the listener waits before subscribing again after Redis failed.
RESUBSCRIBE_SECONDS = 2.0
#: A hook event for a task no one follows yet is kept this long, for a follower about to open
#: its watch (the upstream may call back before the submission is recorded); at most EARLY_EVENTS_MAX.
EARLY_EVENT_SECONDS = 60.0
EARLY_EVENTS_MAX = 2_000
#: Longest the first watch waits for the hook subscription to be active, seconds.
SUBSCRIBE_WAIT_SECONDS = 2.0
# Binds a signature to its use, so the same key signing something else cannot open this door.
_PURPOSE = "mjq-mjproxy-notify:"


def callback_key(settings: Settings) -> str:
    """The key notify hooks are signed with: MJQ_SECRET_KEY, else MJQ_API_SECRET; empty = no hooks (polls only)."""
    return settings.secret_key.strip() or settings.api_secret.strip()


def callback_signature(key: str, account_id: str) -> str:
    """The per-account secret of the notify hook: HMAC-SHA256(key, account id), hex."""
    return hmac.new(key.encode(), f"{_PURPOSE}{account_id}".encode(), hashlib.sha256).hexdigest()


def signature_matches(key: str, account_id: str, given: str | None) -> bool:
    """Constant-time check of a hook's `sig`; always False without a key."""
    if not key or not given:
        return False
    return hmac.compare_digest(given.encode(), callback_signature(key, account_id).encode())


def notify_url(callback_base: str, key: str, account_id: str) -> str:
    """The notify hook for an account's jobs. Upstreams POST it with no custom header, so the
    secret travels in the query string."""
    path = NOTIFY_PATH.format(account=account_id)
    return f"{callback_base.rstrip('/')}{path}?sig={callback_signature(key, account_id)}"


def publish_event(redis: Redis, account_id: str, task: dict[str, Any]) -> int:
    """Hand one upstream task JSON to whoever follows it; returns how many processes listened.

    Raises RedisError when Redis is down (the hook should then answer 5xx so the upstream retries).
    """
    listeners: Any = redis.publish(UPSTREAM_CHANNEL.format(account=account_id), protocol.dumps(task))
    return int(listeners)


@dataclass
class Watch:
    """One follower's mailbox for one upstream task."""

    account_id: str
    upstream_id: str
    endpoint: Endpoint
    mailbox: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    def next(self, timeout_seconds: float) -> dict[str, Any] | None:
        """The next upstream task JSON, or None after `timeout_seconds`."""
        try:
            return self.mailbox.get(timeout=max(timeout_seconds, 0.0))
        except queue.Empty:
            return None


class UpstreamWatch:
    """Routes upstream events (hooks via Redis, batched polls) to the watches of this process."""

    def __init__(self, redis: Redis | None, client: UpstreamClient, poll_interval_seconds: float,
                 listen_wait_seconds: float = 1.0) -> None:
        """`listen_wait_seconds`: how long one wait for a hook event blocks (and so how long `stop` may take)."""
        self.redis = redis
        self.client = client
        self.poll_interval_seconds = poll_interval_seconds
        self.listen_wait_seconds = listen_wait_seconds
        self._watches: dict[tuple[str, str], list[Watch]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscribed = threading.Event()
        self._early: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()
        #: list-by-condition calls made (tests assert batching).
        self.polls = 0

    def open(self, account_id: str, endpoint: Endpoint, upstream_id: str) -> Watch:
        """Start routing events of `upstream_id` on `account_id` to a new watch (close it when done)."""
        watch = Watch(account_id, upstream_id, endpoint)
        with self._lock:
            self._watches.setdefault((account_id, upstream_id), []).append(watch)
            early = self._early.pop((account_id, upstream_id), None)
            listening = self._ensure_threads()
        if early is not None:
            watch.mailbox.put(early[1])
        if listening:
            self._subscribed.wait(SUBSCRIBE_WAIT_SECONDS)
        return watch

    def close(self, watch: Watch) -> None:
        with self._lock:
            key = (watch.account_id, watch.upstream_id)
            remaining = [w for w in self._watches.get(key, []) if w is not watch]
            if remaining:
                self._watches[key] = remaining
            else:
                self._watches.pop(key, None)

    def deliver(self, account_id: str, task: Any, keep_early: bool = False) -> int:
        """Put one upstream task JSON in the mailboxes of its watches; returns how many got it.

        `keep_early`: with no watch yet, keep the event for a watch opened within EARLY_EVENT_SECONDS.
        """
        if not isinstance(task, dict) or task.get("id") in (None, ""):
            return 0
        key = (account_id, str(task["id"]))
        with self._lock:
            watches = list(self._watches.get(key, []))
            if not watches and keep_early:
                self._keep_early(key, task)
        for watch in watches:
            watch.mailbox.put(task)
        return len(watches)

    def poll_once(self) -> int:
        """One `list-by-condition` per account for every task followed here; returns the events delivered."""
        with self._lock:
            by_account: dict[str, tuple[Endpoint, list[str]]] = {}
            for (account_id, upstream_id), watches in self._watches.items():
                endpoint, ids = by_account.setdefault(account_id, (watches[-1].endpoint, []))
                ids.append(upstream_id)
        delivered = 0
        for account_id, (endpoint, ids) in by_account.items():
            try:
                tasks = self.client.list_tasks(endpoint, ids)
            except UpstreamError as exc:
                log.warning("polling %d task(s) of account %s failed: %s", len(ids), account_id, exc)
                continue
            finally:
                self.polls += 1
            delivered += sum(self.deliver(account_id, task) for task in tasks)
        return delivered

    def _keep_early(self, key: tuple[str, str], task: dict[str, Any]) -> None:
        now = time.monotonic()
        self._early.pop(key, None)
        self._early[key] = (now, task)
        while self._early and (len(self._early) > EARLY_EVENTS_MAX
                               or next(iter(self._early.values()))[0] < now - EARLY_EVENT_SECONDS):
            self._early.popitem(last=False)

    def stop(self) -> None:
        """Stop the threads (tests; a worker process simply exits)."""
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _ensure_threads(self) -> bool:
        """Start the threads once; True when this call started the hook listener."""
        if self._threads:
            return False
        targets = [("mjq-mjproxy-poll", self._poll_loop)]
        if self.redis is not None:
            targets.append(("mjq-mjproxy-listen", self._listen_loop))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.redis is not None

    def _poll_loop(self) -> None:
        while not self._stopped.wait(self.poll_interval_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad answer
                log.exception("mjproxy poll failed")

    def _listen_loop(self) -> None:
        assert self.redis is not None
        prefix = UPSTREAM_CHANNEL.format(account="")
        while not self._stopped.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(UPSTREAM_PATTERN)
                self._subscribed.set()
                try:
                    while not self._stopped.is_set():
                        message = pubsub.get_message(timeout=self.listen_wait_seconds)
                        if message is None or message.get("type") != "pmessage":
                            continue
                        channel = _text(message["channel"])
                        try:
                            task = json.loads(_text(message["data"]))
                        except ValueError:
                            continue
                        self.deliver(channel[len(prefix):], task, keep_early=True)
                finally:
                    pubsub.close()
            except (RedisError, OSError) as exc:
                log.warning("mjproxy notify listener lost Redis (%s); polling covers until it is back", exc)
                self._stopped.wait(RESUBSCRIBE_SECONDS)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
