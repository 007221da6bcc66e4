"""Admin monitoring types: what one snapshot of the system holds.

Everything here is plain data computed at read time; nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.types import JobStatus, Priority

# Histogram buckets (seconds, upper bounds) for queue wait and run time; +Inf is implied.
QUEUE_WAIT_BUCKETS = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
RUN_TIME_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Windows (minutes) over which throughput and latency percentiles are reported.
WINDOWS_MINUTES = (1, 5, 15)


@dataclass(frozen=True)
class PriorityDepth:
    """One priority of a queue: what waits at it.

    For a job queue, ``depth`` counts the queued jobs in SQL (the queue of record) and
    ``in_broker`` those the dispatcher has handed to its Redis list (a small buffer); for the
    webhooks and maintenance queues both are the Redis list's length."""

    priority: Priority
    list_name: str
    depth: int
    # now - created_at of the oldest queued job of this priority (None: unknown or empty).
    oldest_age_seconds: float | None
    in_broker: int = 0


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    priorities: tuple[PriorityDepth, ...]
    # Messages delivered to a worker and not yet acknowledged (running jobs), from kombu's
    # ``unacked`` hash.
    unacked: int

    @property
    def depth(self) -> int:
        return sum(p.depth for p in self.priorities)

    @property
    def oldest_age_seconds(self) -> float | None:
        ages = [p.oldest_age_seconds for p in self.priorities if p.oldest_age_seconds is not None]
        return max(ages) if ages else None


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process, as its last heartbeat described it."""

    host: str
    pid: int
    queues: tuple[str, ...]
    engine: str
    model: str
    slots: int
    slots_in_use: int
    started_at: datetime
    last_seen: datetime

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}"


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class WindowStats:
    """Jobs that reached a terminal status in the last ``minutes``."""

    minutes: int
    completed: int
    by_status: dict[str, int]
    queue_wait: Percentiles
    run_time: Percentiles
    # True when the window held more rows than were read; percentiles cover the newest rows.
    truncated: bool = False

    @property
    def per_minute(self) -> float:
        return self.completed / self.minutes


@dataclass(frozen=True)
class Failure:
    job_id: str
    owner_id: str  # the key whose job it is
    model: str
    error_code: str | None
    error_message: str | None
    completed_at: datetime | None


@dataclass
class Histogram:
    """Cumulative bucket counts (Prometheus style) over ``bounds``, plus count and sum."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * len(self.bounds)

    def add(self, other: Histogram) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.count += other.count
        self.total += other.total


@dataclass
class ModelTotals:
    """Everything that finished for one model, by final status (the counter families)."""

    jobs_by_status: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: dict[str, Decimal] = field(default_factory=dict)  # currency -> amount
    queue_wait: Histogram = field(default_factory=lambda: Histogram(QUEUE_WAIT_BUCKETS))
    run_time: Histogram = field(default_factory=lambda: Histogram(RUN_TIME_BUCKETS))
    worker_lost: int = 0  # failed ``worker_lost``: lost their worker LOUPE_MAX_ATTEMPTS times

    def add(self, other: ModelTotals) -> None:
        for status, n in other.jobs_by_status.items():
            self.jobs_by_status[status] = self.jobs_by_status.get(status, 0) + n
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        for currency, amount in other.cost.items():
            self.cost[currency] = self.cost.get(currency, Decimal(0)) + amount
        self.queue_wait.add(other.queue_wait)
        self.run_time.add(other.run_time)
        self.worker_lost += other.worker_lost


def merge_totals(*parts: dict[str, ModelTotals]) -> dict[str, ModelTotals]:
    """Sum per-model totals into a new mapping (the inputs are left alone)."""
    merged: dict[str, ModelTotals] = {}
    for part in parts:
        for model, totals in part.items():
            merged.setdefault(model, ModelTotals()).add(totals)
    return merged


@dataclass(frozen=True)
class JobCounts:
    """Live counts from the job store."""

    by_status: dict[str, int]
    running_by_model: dict[str, int]
    # created_at of the oldest queued job, per priority that has queued jobs.
    oldest_queued: dict[Priority, datetime]

    def status(self, status: JobStatus) -> int:
        return self.by_status.get(status.value, 0)


@dataclass(frozen=True)
class Snapshot:
    """One consistent-enough read of everything the admin views show."""

    generated_at: datetime
    queues: tuple[QueueDepth, ...]
    workers: tuple[WorkerInfo, ...]
    jobs: JobCounts
    windows: tuple[WindowStats, ...]
    recent_failures: tuple[Failure, ...]
    totals: dict[str, ModelTotals]
    webhook_deliveries: dict[str, int]
