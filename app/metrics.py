"""Prometheus series computed at scrape time from the database and Redis.

Why not counters in process memory: jobs are submitted by any gunicorn worker and run by any
Celery process on any host, so per-process counters need multiprocess mode and still see only
one host. The tasks table and the scheduler's Redis keys already hold the cluster-wide truth,
so one scrape of any web worker answers for the whole cluster, and two scrapes of two workers
agree. Every query is one aggregate (GROUP BY) statement and the jobs counters and the
duration histogram share one pass: ~50-65 ms per scrape at 100k tasks on PostgreSQL (tested
in tests/integration/test_metrics_multiworker.py); SQLite takes ~2-4 times that.

Counters count the rows still stored: retention (MJQ_RETENTION_DAYS) deleting old tasks makes
them drop, which Prometheus reads as a counter reset (one spurious jump per retention pass).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy import case, func, literal, or_, select
from sqlalchemy.orm import Session

from app import protocol
from app.models import Account, Task, WebhookDelivery, now_ms

log = logging.getLogger(__name__)

#: Upper bounds of the job duration buckets (finish - start), seconds.
DURATION_BUCKETS_SECONDS = (1, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
POOLS = ("fast", "relax")
#: Jobs that ran to an end of their own (a cancel's finish time says when it was cancelled, not how long it ran).
TIMED_STATUSES = (protocol.SUCCESS, protocol.FAILURE)
#: Delivery statuses that are final (counters) and those still moving (gauges); workers/webhooks.py names them.
DELIVERY_OUTCOMES = ("delivered", "failed", "disabled", "superseded")
DELIVERY_OPEN = ("pending", "delivering")

#: failReason prefixes or patterns → a short error kind (first match wins; SQL LIKE syntax).
ERROR_KINDS: Sequence[tuple[str, Sequence[str]]] = (
    ("banned_prompt", ("[Banned prompt%",)),
    ("moderated", ("[Request cancelled due to output filters]%",)),
    ("timeout", ("timed out%", "[Upstream timeout]%", "%did not send%within%")),
    ("slot_wait", ("waited % for a free slot%",)),
    ("queue_full", ("[Queue full]%",)),
    ("invalid_parameter", ("[Invalid parameter]%",)),
    ("verification", ("%human verification required%",)),
    ("upstream_error", ("[Upstream error]%", "[Upstream refused]%", "[Interaction failed]%")),
    ("upstream_unreachable", ("[Upstream unreachable]%",)),
    ("upstream_image", ("[Upstream image]%",)),
    ("upstream_cancelled", ("[Upstream cancelled]%", "[Stopped]%")),
    ("stale_slot", ("[Stale slot]%",)),
    ("account_unavailable", ("account % is not available%", "no driver %")),
    ("worker_lost", ("the job's worker stopped%",)),
    ("internal", ("[Internal Error]%",)),
)


def pool_of_mode(mode: str) -> str:
    """`relax` for RELAX, `fast` for FAST and TURBO (the scheduler's pools)."""
    return "relax" if mode == "RELAX" else "fast"


class MjqCollector(Collector):
    """Every mjq series, read from `session` (one scrape) and `redis` (None or down: no slot series)."""

    def __init__(self, session: Session, redis: Any = None, clock: Callable[[], int] = now_ms) -> None:
        self.session = session
        self.redis = redis
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._queues()
        yield from self._accounts()
        yield from self._deliveries()
        yield self._errors()

    def _jobs(self) -> Iterator[Metric]:
        """Jobs by action × mode × status and the duration histogram, from one pass over the tasks."""
        # NULL when the job never started: COUNT, SUM and the comparisons below all leave it out.
        elapsed_ms = Task.finish_time - Task.start_time
        rows = self.session.execute(
            select(Task.action, Task.mode, Task.status, func.count(), func.count(elapsed_ms), func.sum(elapsed_ms),
                   *(func.sum(case((elapsed_ms <= b * 1000, 1), else_=0)) for b in DURATION_BUCKETS_SECONDS))
            .group_by(Task.action, Task.mode, Task.status)).all()
        submitted = CounterMetricFamily("mjq_jobs_submitted", "Jobs submitted (tasks stored), by action and mode",
                                        labels=["action", "mode"])
        finished = CounterMetricFamily("mjq_jobs_finished", "Jobs that reached a terminal status",
                                       labels=["action", "mode", "status"])
        open_ = GaugeMetricFamily("mjq_jobs_open", "Jobs not finished yet, by status",
                                  labels=["action", "mode", "status"])
        totals: dict[tuple[str, str], int] = {}
        timed_counts: dict[tuple[str, str], list[int]] = {}
        timed_ms: dict[tuple[str, str], float] = {}
        for action, mode, status, count, n_timed, total_ms, *in_bucket in rows:
            key = (action, mode)
            totals[key] = totals.get(key, 0) + count
            (finished if status in protocol.TERMINAL_STATUSES else open_).add_metric([action, mode, status], count)
            if n_timed and status in TIMED_STATUSES:
                counts = timed_counts.setdefault(key, [0] * (len(DURATION_BUCKETS_SECONDS) + 1))
                for i, n in enumerate([*in_bucket, n_timed]):
                    counts[i] += int(n or 0)
                timed_ms[key] = timed_ms.get(key, 0.0) + float(total_ms or 0)
        for key, count in sorted(totals.items()):
            submitted.add_metric(list(key), count)
        durations = HistogramMetricFamily("mjq_job_duration_seconds", "Run time of finished jobs (finish - start)",
                                          labels=["action", "mode"])
        for key, counts in sorted(timed_counts.items()):
            bounds = [*(str(float(b)) for b in DURATION_BUCKETS_SECONDS), "+Inf"]
            durations.add_metric(list(key), list(zip(bounds, counts, strict=True)), timed_ms[key] / 1000)
        yield from (submitted, finished, open_, durations)

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("mjq_queue_depth", "Jobs waiting to start (NOT_START), by pool", labels=["pool"])
        oldest = GaugeMetricFamily("mjq_queue_oldest_age_seconds",
                                   "Age of the oldest job waiting to start, by pool (0 when none waits)",
                                   labels=["pool"])
        rows = self.session.execute(select(Task.mode, func.count(), func.min(Task.submit_time))
                                    .where(Task.status == protocol.NOT_START).group_by(Task.mode)).all()
        now = self.clock()
        waiting = dict.fromkeys(POOLS, 0)
        first: dict[str, int] = {}
        for mode, count, submit_ms in rows:
            pool = pool_of_mode(mode)
            waiting[pool] += count
            first[pool] = min(first.get(pool, submit_ms), submit_ms)
        for pool in POOLS:
            depth.add_metric([pool], waiting[pool])
            oldest.add_metric([pool], max(now - first[pool], 0) / 1000 if pool in first else 0)
        yield from (depth, oldest)

    def _accounts(self) -> Iterator[Metric]:
        inflight = GaugeMetricFamily("mjq_inflight", "Jobs running upstream (SUBMITTED or IN_PROGRESS), by account "
                                     "and pool", labels=["account", "pool"])
        accounts = list(self.session.scalars(select(Account.id).order_by(Account.id)))
        counts = {(a, p): 0 for a in accounts for p in POOLS}
        for account, mode, count in self.session.execute(
                select(Task.account_id, Task.mode, func.count())
                .where(Task.status.in_((protocol.SUBMITTED, protocol.IN_PROGRESS)))
                .group_by(Task.account_id, Task.mode)):
            key = (account or "", pool_of_mode(mode))
            counts[key] = counts.get(key, 0) + count
        for (account, pool), count in sorted(counts.items()):
            inflight.add_metric([account, pool], count)
        yield inflight
        yield from self._slots(accounts)

    def _slots(self, accounts: list[str]) -> Iterator[Metric]:
        """The scheduler's view (Redis): slots held and jobs queued for a slot, per account and pool."""
        if self.redis is None:
            return
        from workers.scheduler import Scheduler

        held = GaugeMetricFamily("mjq_slots_held", "Account slots held by running jobs (scheduler leases)",
                                 labels=["account", "pool"])
        queued = GaugeMetricFamily("mjq_slots_waiting", "Jobs queued for an account's slot (scheduler FIFO)",
                                   labels=["account", "pool"])
        scheduler = Scheduler(self.redis, clock=self.clock)
        try:
            for account in accounts:
                for pool in POOLS:
                    held.add_metric([account, pool], scheduler.holders(account, pool))
                    queued.add_metric([account, pool], len(scheduler.waiting(account, pool)))
        except RedisError as exc:
            log.warning("metrics: slot series left out, Redis unavailable: %s", exc)
            return
        yield from (held, queued)

    def _deliveries(self) -> Iterator[Metric]:
        done = CounterMetricFamily("mjq_webhook_deliveries", "Webhook deliveries by final outcome",
                                   labels=["outcome"])
        moving = GaugeMetricFamily("mjq_webhook_deliveries_open", "Webhook deliveries not settled yet",
                                   labels=["status"])
        counts = dict(self.session.execute(select(WebhookDelivery.status, func.count())
                                           .group_by(WebhookDelivery.status)).all())
        for outcome in DELIVERY_OUTCOMES:
            done.add_metric([outcome], counts.get(outcome, 0))
        for status in DELIVERY_OPEN:
            moving.add_metric([status], counts.get(status, 0))
        yield from (done, moving)

    def _errors(self) -> Metric:
        kind = case(*((or_(*(Task.fail_reason.like(p) for p in patterns)), name) for name, patterns in ERROR_KINDS),
                    else_=literal("other")).label("kind")
        rows = self.session.execute(select(kind, func.count()).where(Task.status == protocol.FAILURE)
                                    .group_by(kind)).all()
        family = CounterMetricFamily("mjq_upstream_errors", "Failed jobs by error kind (from failReason)",
                                     labels=["kind"])
        counts: dict[str, int] = dict(rows)
        for name in [*(k for k, _ in ERROR_KINDS), "other"]:
            family.add_metric([name], counts.get(name, 0))
        return family
