"""Webhook delivery: every row of `webhook_deliveries` is POSTed until it is delivered or given up.

The schedule lives in the database, not in Celery: a row is due when `next_attempt_at` has
passed. Two things send `mj.webhook.deliver(id)` on `mj.webhooks`: the writer of a row (right
after its commit, and after a failure whose next delay is short) and the beat sweep, which
finds due rows nobody sent and attempts whose worker died. Either message may be lost: the
sweep finds the row again. Each attempt claims its row with a compare-and-set and a lease,
so two messages for one row make one POST, and a worker killed mid-POST leaves a lease that
expires and an attempt that is made again (at least once; every copy has the same webhook-id).

Each attempt is signed with the task owner's secret as the claim reads it (workers/webhook_signing.py),
so a rotated secret applies from the next attempt on; a secret this process cannot open means no POST
and a retry on the schedule.

Outcomes: 2xx delivered (older pending events of the task are superseded); 410 disables the
URL; a refused URL (workers/ssrf.py) fails at once; anything else (3xx, 4xx, 5xx, no answer)
is retried after the schedule's next delay, ±10 % jitter, or after `Retry-After` on 429/503
when that is longer; after the last delay the delivery fails.
"""
from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from celery import Celery
from sqlalchemy import and_, exists, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker
from sqlalchemy.sql.expression import Exists

from app.models import WebhookAttempt, WebhookDelivery, WebhookDisabledEndpoint, WebhookSecret, now_ms
from app.schemas import parse_digits
from config.errors import MjqError
from workers import queues
from workers.ssrf import UrlRefused
from workers.webhook_http import Answer, PostFailed, Transport
from workers.webhook_signing import GLOBAL_SCOPE, SecretSource, signed_headers

log = logging.getLogger(__name__)

DELIVER = "mj.webhook.deliver"
SWEEP = "mj.webhook.sweep"

# Delivery statuses.
PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
FAILED = "failed"
DISABLED = "disabled"
SUPERSEDED = "superseded"

#: Each delay of the schedule is stretched or shrunk by up to this fraction, so retries spread out.
JITTER_FRACTION = 0.1
#: A claimed attempt's lease lasts the attempt's timeout plus this, in ms; then the sweep retries it.
LEASE_MARGIN_MS = 5_000
#: A pending row whose deliver message is on its way is left to that message this long, in ms.
QUEUED_HOLD_MS = 30_000
#: Retries due within this many seconds are sent with a Celery countdown; later ones wait for the sweep.
FAST_RETRY_MAX_SECONDS = 60.0
#: Longest Retry-After honoured, in seconds.
MAX_RETRY_AFTER_SECONDS = 86_400.0
#: Rows one sweep handles at most.
SWEEP_BATCH = 500

#: (delivery id, countdown seconds) -> whether the deliver message went out.
Enqueue = Callable[[int, float], bool]


def endpoint_key(url: str) -> str:
    """The key of a webhook URL in indexes and the disabled list (sha256 hex: any length fits)."""
    return hashlib.sha256(url.encode()).hexdigest()


def event_id(task_id: int, seq: int) -> str:
    """`webhook-id` of event `seq` of a task: the same at every attempt, unique across events."""
    return f"msg_{task_id}_{seq}"


def celery_enqueuer(celery: Celery) -> Enqueue:
    """An Enqueue sending `mj.webhook.deliver` on `mj.webhooks`; a broker failure is logged, not raised."""

    def enqueue(delivery_id: int, countdown: float) -> bool:
        try:
            celery.send_task(DELIVER, args=[str(delivery_id)], queue=queues.WEBHOOKS, routing_key=queues.WEBHOOKS,
                             countdown=countdown if countdown > 0 else None)
            return True
        except Exception as exc:  # noqa: BLE001 - the sweep sends it later
            log.warning("enqueue of webhook delivery %s failed: %s", delivery_id, exc)
            return False

    return enqueue


def next_delay(schedule: Sequence[float], attempts_done: int, rand: random.Random) -> float | None:
    """Seconds until the attempt after `attempts_done` attempts, jittered; None when the schedule is spent."""
    if attempts_done >= len(schedule):
        return None
    return schedule[attempts_done] * (1 + rand.uniform(-JITTER_FRACTION, JITTER_FRACTION))


def retry_after_seconds(value: str | None, now: int) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from `now` (ms), capped; None if unusable."""
    if not value:
        return None
    value = value.strip()
    seconds = parse_digits(value)
    if seconds is not None:
        return min(float(seconds), MAX_RETRY_AFTER_SECONDS)
    try:  # the receiver's text: anything it says that is not a date is unusable, never an error of ours
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            return None
        return min(max(when.timestamp() - now / 1000, 0.0), MAX_RETRY_AFTER_SECONDS)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


# The other rows of the same task and URL, in the correlated checks below.
_Other = aliased(WebhookDelivery)
#: Bulk UPDATEs here never need the session's copies of the rows brought up to date.
_PLAIN = {"synchronize_session": False}


def _newer_delivered(task_id: Any, endpoint: Any, seq: Any) -> Exists:
    return exists().where(_Other.task_id == task_id, _Other.endpoint == endpoint, _Other.seq > seq,
                          _Other.status == DELIVERED)


def _older_in_flight(task_id: Any, endpoint: Any, seq: Any, now: int) -> Exists:
    # Events of a task reach a healthy receiver in order: an older one that is due and never
    # tried, or being sent now, goes first. One that already failed no longer holds the newer
    # ones back (they would wait hours behind its schedule).
    return exists().where(_Other.task_id == task_id, _Other.endpoint == endpoint, _Other.seq < seq, or_(
        and_(_Other.status == PENDING, _Other.attempts == 0, _Other.next_attempt_at <= now),
        and_(_Other.status == DELIVERING, _Other.locked_until > now),
    ))


#: The signing secret of a delivery's owner, read in the claim's own statement (no extra round trip).
_SECRET_OF_ROW = (select(WebhookSecret.secret)
                  .where(WebhookSecret.scope == func.coalesce(WebhookDelivery.owner, GLOBAL_SCOPE))
                  .correlate(WebhookDelivery).scalar_subquery())


def newer_delivered(session: Session, row: WebhookDelivery) -> bool:
    """Whether a later event of the same task already reached the same URL (sending `row` would roll it back)."""
    return bool(session.scalar(select(_newer_delivered(row.task_id, row.endpoint, row.seq))))


def older_in_flight(session: Session, row: WebhookDelivery, now: int) -> bool:
    """Whether an older event of the same task and URL must go before `row`."""
    return bool(session.scalar(select(_older_in_flight(row.task_id, row.endpoint, row.seq, now))))


@dataclass(frozen=True)
class Claimed:
    """A row this worker holds for one attempt (`attempt` is its number, the fencing token)."""

    id: int
    task_id: int
    seq: int
    event_id: str
    url: str
    endpoint: str
    owner: str | None
    body: str
    attempt: int
    #: The owner's `webhook_secrets` value at the claim (None when it has none yet): a rotation counts from here.
    secret: str | None


@dataclass
class Deliverer:
    """Attempts and sweeps. Clock (ms), randomness and the HTTP transport are passed in for tests."""

    session_factory: sessionmaker
    transport: Transport
    secrets: SecretSource
    schedule: Sequence[float]
    timeout_seconds: float
    enqueue: Enqueue | None = None
    clock: Callable[[], int] = now_ms
    rand: random.Random = field(default_factory=random.Random)
    worker: str = ""

    def attempt(self, delivery_id: int) -> str:
        """Make one attempt of delivery `delivery_id` if it is due and free; returns what happened."""
        claimed = self._claim(delivery_id)
        if isinstance(claimed, str):
            return claimed
        started = self.clock()
        body = claimed.body.encode()
        answer: Answer | None = None
        error: str | None = None
        permanent = False
        try:
            key = self.secrets.key_for(claimed.owner, claimed.secret)
        except (MjqError, ValueError) as exc:
            # Nothing is sent unsigned: the attempt fails and is retried on the schedule (the operator
            # may restore MJQ_SECRET_KEY, or the key may rotate its secret).
            error = f"cannot sign: {exc}"
        else:
            headers = signed_headers(key, claimed.event_id, started // 1000, body, claimed.seq)
            try:
                answer = self.transport.post(claimed.url, body, headers, self.timeout_seconds)
            except UrlRefused as exc:
                error, permanent = f"refused: the URL {exc}", exc.permanent
            except PostFailed as exc:
                error = str(exc)
        return self._record(claimed, started, answer, error, permanent)

    def _claim(self, delivery_id: int) -> Claimed | str:
        now = self.clock()
        lease = now + int(self.timeout_seconds * 1000) + LEASE_MARGIN_MS
        d = WebhookDelivery
        with self.session_factory() as session:
            _relaxed_commit(session)
            # The common case in one statement: due, free, nothing newer delivered, URL enabled, first in line.
            got = session.execute(update(d).where(
                d.id == delivery_id, d.status == PENDING, d.next_attempt_at <= now,
                ~_newer_delivered(d.task_id, d.endpoint, d.seq), ~_older_in_flight(d.task_id, d.endpoint, d.seq, now),
                ~exists().where(WebhookDisabledEndpoint.endpoint == d.endpoint),
            ).values(status=DELIVERING, attempts=d.attempts + 1, locked_until=lease, last_attempt_at=now,
                     updated_at=now)
                .returning(d.id, d.task_id, d.seq, d.event_id, d.url, d.endpoint, d.owner, d.body, d.attempts,
                           _SECRET_OF_ROW)
                .execution_options(synchronize_session=False)).first()
            session.commit()
            if got is not None:
                return Claimed(*got)
            # Not claimed: find out why (and settle superseded or disabled rows).
            row = session.get(WebhookDelivery, delivery_id)
            if row is None:
                return "missing"
            if row.status != PENDING or row.next_attempt_at is None or row.next_attempt_at > now:
                return "not due"
            guard = (WebhookDelivery.id == row.id, WebhookDelivery.status == PENDING,
                     WebhookDelivery.attempts == row.attempts)
            verdict = None
            if newer_delivered(session, row):
                verdict = SUPERSEDED
            elif session.get(WebhookDisabledEndpoint, row.endpoint) is not None:
                verdict = DISABLED
            if verdict:
                session.execute(update(WebhookDelivery).where(*guard).values(
                    status=verdict, next_attempt_at=None, locked_until=0, updated_at=now).execution_options(**_PLAIN))
                session.commit()
                return verdict
            if older_in_flight(session, row, now):
                return "waiting"  # the older event's outcome sends this one
            return "taken"  # another message for the same row claimed it first

    def _record(self, claimed: Claimed, started: int, answer: Answer | None, error: str | None,
                permanent: bool) -> str:
        finished = self.clock()
        code = answer.status if answer else None
        values: dict[str, Any] = {"last_status_code": code, "last_error": error, "locked_until": 0,
                                  "updated_at": finished, "next_attempt_at": None}
        retry_in: float | None = None
        if code is not None and 200 <= code < 300:
            values.update(status=DELIVERED, delivered_at=finished)
        elif code == 410:
            values.update(status=DISABLED, last_error="410 Gone: the endpoint is disabled")
        elif permanent:
            values.update(status=FAILED)
        else:
            if answer is not None:
                values["last_error"] = _describe(answer)
            retry_in = next_delay(self.schedule, claimed.attempt, self.rand)
            honoured = retry_after_seconds(answer.retry_after, finished) if code in (429, 503) and answer else None
            if retry_in is not None and honoured is not None:
                retry_in = max(retry_in, honoured)
            if retry_in is None:
                values.update(status=FAILED)
            else:
                due = finished + int(retry_in * 1000)
                fast = self.enqueue is not None and retry_in <= FAST_RETRY_MAX_SECONDS
                values.update(status=PENDING, next_attempt_at=due, locked_until=due + QUEUED_HOLD_MS if fast else 0)
        for tries_left in (1, 0):
            with self.session_factory() as session:
                _relaxed_commit(session)
                session.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == claimed.id, WebhookDelivery.status == DELIVERING,
                    WebhookDelivery.attempts == claimed.attempt).values(**values).execution_options(**_PLAIN))
                session.add(WebhookAttempt(delivery_id=claimed.id, number=claimed.attempt, started_at=started,
                                           finished_at=finished, status_code=code, error=values["last_error"],
                                           worker=self.worker or None))
                # The task's other pending events to this URL: older ones are superseded by a delivery,
                # the next due one is sent now (in order). Usually there are none.
                d = WebhookDelivery
                others = session.execute(select(d.id, d.seq, d.next_attempt_at)
                                         .where(WebhookDelivery.task_id == claimed.task_id,
                                                WebhookDelivery.endpoint == claimed.endpoint,
                                                WebhookDelivery.status == PENDING, WebhookDelivery.id != claimed.id)
                                         .order_by(WebhookDelivery.seq)).all()
                older = [o.id for o in others if o.seq < claimed.seq]
                if values["status"] == DELIVERED and older:
                    session.execute(update(WebhookDelivery).where(
                        WebhookDelivery.id.in_(older), WebhookDelivery.status == PENDING,
                    ).values(status=SUPERSEDED, next_attempt_at=None, locked_until=0, updated_at=finished)
                        .execution_options(**_PLAIN))
                elif values["status"] == DISABLED:
                    disable_endpoint(session, claimed.url, claimed.endpoint, f"410 Gone to {claimed.event_id}",
                                     finished)
                following = next((o.id for o in others if o.seq > claimed.seq and o.next_attempt_at is not None
                                  and o.next_attempt_at <= finished), None)
                try:
                    session.commit()
                    break
                except IntegrityError:
                    # Another worker disabled the same URL at the same moment: write again, finding its row.
                    session.rollback()
                    if not tries_left:
                        raise
        if following is not None and self.enqueue is not None:
            self.enqueue(following, 0)
        if retry_in is not None and self.enqueue is not None and retry_in <= FAST_RETRY_MAX_SECONDS:
            self.enqueue(claimed.id, retry_in)
        log.info("webhook %s attempt %s to %s: %s", claimed.event_id, claimed.attempt, claimed.url,
                 values["status"] if code is None else f"HTTP {code}, {values['status']}")
        return str(values["status"])

    def sweep(self, limit: int = SWEEP_BATCH) -> list[int]:
        """Re-arm attempts whose worker died, then send every due row nobody is sending.

        Returns the ids it sent (or, without an Enqueue, the ids the caller should attempt).
        """
        now = self.clock()
        with self.session_factory() as session:
            stale = session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.status == DELIVERING, WebhookDelivery.locked_until <= now).limit(limit)).all()
            for row in stale:
                result: Any = session.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == row.id, WebhookDelivery.status == DELIVERING,
                    WebhookDelivery.attempts == row.attempts, WebhookDelivery.locked_until <= now,
                ).values(status=PENDING, next_attempt_at=now, locked_until=0, updated_at=now,
                         last_error="no outcome: the worker stopped during the attempt"))
                if result.rowcount == 1:
                    session.add(WebhookAttempt(delivery_id=row.id, number=row.attempts,
                                               started_at=row.last_attempt_at or now, finished_at=None,
                                               error="no outcome: the worker stopped during the attempt"))
            session.commit()
            due = session.scalars(select(WebhookDelivery.id).where(
                WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now,
                WebhookDelivery.locked_until <= now,
            ).order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
            held = []
            for delivery_id in due:
                result = session.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING,
                    WebhookDelivery.locked_until <= now).values(locked_until=now + QUEUED_HOLD_MS))
                if result.rowcount == 1:
                    held.append(delivery_id)
            session.commit()
        if stale or held:
            log.info("webhook sweep: %d abandoned attempts re-armed, %d due deliveries sent", len(stale), len(held))
        if self.enqueue is not None:
            return [delivery_id for delivery_id in held if self.enqueue(delivery_id, 0)]
        return held


def _relaxed_commit(session: Session) -> None:
    """On PostgreSQL, let this transaction's commit return before its WAL reaches the disk.

    Safe for claims and outcomes: if the database server itself crashes in the next few
    milliseconds, a lost claim leaves the row pending and a lost outcome leaves a lease that
    expires, so the worst case is one more POST with the same webhook-id, which at-least-once
    delivery allows. Task rows are never written this way.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = off"))


def disable_endpoint(session: Session, url: str, endpoint: str, reason: str, now: int) -> None:
    """Stop sending to `url`: record it and disable its pending deliveries (in the caller's transaction)."""
    if session.get(WebhookDisabledEndpoint, endpoint) is None:
        session.add(WebhookDisabledEndpoint(endpoint=endpoint, url=url, reason=reason, disabled_at=now))
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.endpoint == endpoint, WebhookDelivery.status == PENDING,
    ).values(status=DISABLED, next_attempt_at=None, locked_until=0, updated_at=now))


def _describe(answer: Answer) -> str:
    text = f"HTTP {answer.status}"
    if 300 <= answer.status < 400:
        text += f" (redirect to {answer.location or '?'} not followed)"
    elif answer.snippet.strip():
        text += f": {answer.snippet.strip()[:200]}"
    return text
