"""The admin monitoring service: one :class:`Snapshot` from Redis and SQL, cached briefly.

Both ``GET /v1/admin/queues`` and ``GET /metrics`` read the same snapshot. Gauges are computed at
read time and counters come from SQL, so every gunicorn process reports the same numbers without
shared memory or Prometheus multiprocess mode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import redis
from sqlalchemy import Engine

from services.admin.broker import RedisBrokerStats
from services.admin.heartbeats import RedisHeartbeats
from services.admin.sql_stats import SqlJobStats, TotalsCache
from services.admin.types import (
    Failure,
    JobCounts,
    ModelTotals,
    PriorityDepth,
    QueueDepth,
    Snapshot,
    WindowStats,
    WorkerInfo,
)
from services.catalog.registry import ModelRegistry
from services.settings import Settings
from services.types import Priority

# Returns {outcome: count} of webhook deliveries (e.g. from a ``webhook_deliveries`` table).
WebhookOutcomes = Callable[[], Mapping[str, int]]


class BrokerStats(Protocol):
    def depths(
        self, queues: Sequence[str]
    ) -> tuple[dict[str, dict[Priority, tuple[str, int]]], dict[str, int]]: ...


class WorkerDirectory(Protocol):
    def live(self) -> list[WorkerInfo]: ...


class JobStats(Protocol):
    def counts(self) -> JobCounts: ...
    def backlog(self, models: Collection[str] | None) -> dict[Priority, tuple[int, datetime]]: ...
    def windows(self, now: datetime) -> tuple[WindowStats, ...]: ...
    def recent_failures(self) -> tuple[Failure, ...]: ...


class Totals(Protocol):
    def totals(self, now: datetime) -> dict[str, ModelTotals]: ...


def monitored_queues(
    settings: Settings, job_queues: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The Celery queues the admin views report: the job queues (the inference queue, and any
    per-model ones), then the webhooks and maintenance queues."""
    jobs = tuple(job_queues) if job_queues else (settings.inference_queue,)
    return (*jobs, settings.webhook_queue, settings.maintenance_queue)


def job_queue_models(registry: ModelRegistry) -> dict[str, tuple[str, ...] | None]:
    """Each job queue and the models whose jobs it carries (None: every model, one queue)."""
    queues = registry.queues()
    if len(queues) == 1:
        return {queues[0]: None}
    return {queue: registry.models_on(queue) for queue in queues}


class Monitor:
    """Builds snapshots; at most one computation per ``cache_seconds`` per process."""

    def __init__(
        self,
        *,
        queues: Sequence[str],
        sql_queues: Mapping[str, tuple[str, ...] | None],
        broker: BrokerStats,
        workers: WorkerDirectory,
        stats: JobStats,
        totals: Totals,
        clock: Callable[[], datetime],
        cache_seconds: float = 1.0,
        webhook_outcomes: WebhookOutcomes | None = None,
    ) -> None:
        """``sql_queues``: the queues whose jobs are rows of the ``jobs`` table, each with the
        models it carries (None: all of them); their oldest queued age comes from SQL. Other
        queues (webhooks, maintenance) report depth and unacked only."""
        self.queues = tuple(queues)
        self._sql_queues = dict(sql_queues)
        self._broker = broker
        self._workers = workers
        self._stats = stats
        self._totals = totals
        self._clock = clock
        self._cache_seconds = cache_seconds
        self.webhook_outcomes = webhook_outcomes
        self._lock = threading.Lock()
        self._cached: tuple[float, Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        """The current snapshot, or the cached one if younger than ``cache_seconds``."""
        with self._lock:
            if (
                self._cached is not None
                and time.monotonic() - self._cached[0] < self._cache_seconds
            ):
                return self._cached[1]
            snap = self._compute()
            self._cached = (time.monotonic(), snap)
            return snap

    def live_workers(self) -> list[WorkerInfo]:
        """The workers whose heartbeat is live now (uncached: one Redis scan)."""
        return self._workers.live()

    def _compute(self) -> Snapshot:
        now = self._clock()
        depths, unacked = self._broker.depths(self.queues)
        counts = self._stats.counts()
        queues = []
        for queue in self.queues:
            backlog: Mapping[Priority, tuple[int, datetime]] = {}
            if queue in self._sql_queues:
                backlog = self._stats.backlog(self._sql_queues[queue])
            priorities = []
            for priority, (list_name, in_broker) in depths[queue].items():
                depth, created = backlog.get(priority, (in_broker, None))
                if queue in self._sql_queues and priority not in backlog:
                    depth = 0
                age = (
                    None if created is None else round(max(0.0, (now - created).total_seconds()), 3)
                )
                priorities.append(PriorityDepth(priority, list_name, depth, age, in_broker))
            queues.append(QueueDepth(queue, tuple(priorities), unacked.get(queue, 0)))
        outcomes = dict(self.webhook_outcomes()) if self.webhook_outcomes is not None else {}
        return Snapshot(
            generated_at=now,
            queues=tuple(queues),
            workers=tuple(self._workers.live()),
            jobs=counts,
            windows=self._stats.windows(now),
            recent_failures=self._stats.recent_failures(),
            totals=self._totals.totals(now),
            webhook_deliveries=outcomes,
        )

    def close(self) -> None:
        for part in (self._broker, self._workers):
            close = getattr(part, "close", None)
            if close is not None:
                close()


def build_monitor(
    settings: Settings,
    engine: Engine,
    clock: Callable[[], datetime],
    *,
    queues: Sequence[str] | None = None,
    registry: ModelRegistry | None = None,
    webhook_outcomes: WebhookOutcomes | None = None,
) -> Monitor:
    """The real monitor over the broker's Redis database and the SQL job store.

    ``queues`` defaults to :func:`monitored_queues` (with ``registry``'s job queues);
    ``webhook_outcomes`` feeds
    ``loupe_webhook_deliveries_total`` (absent: the family is reported empty).
    """
    # One client (one connection pool) for the lists and the heartbeats; closing it twice is fine.
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    stats = SqlJobStats(engine)
    job_queues = (
        job_queue_models(registry) if registry is not None else {settings.inference_queue: None}
    )
    return Monitor(
        queues=queues if queues is not None else monitored_queues(settings, list(job_queues)),
        sql_queues=job_queues,
        broker=RedisBrokerStats(client),
        workers=RedisHeartbeats(client),
        stats=stats,
        totals=TotalsCache(stats),
        clock=clock,
        cache_seconds=settings.metrics_cache_ms / 1000,
        webhook_outcomes=webhook_outcomes,
    )
