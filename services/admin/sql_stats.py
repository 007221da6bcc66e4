"""Job statistics from the SQL job store, cheap enough to read on every scrape.

Every query filters on an indexed column (``status``, ``completed_at``) and aggregates in SQL;
only the last 15 minutes of finished jobs (capped) come back as rows, for percentiles. Works on
SQLite and PostgreSQL: the one dialect-specific piece is :class:`seconds_between`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Float, Text, and_, case, cast, func, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from services.admin.types import (
    QUEUE_WAIT_BUCKETS,
    RUN_TIME_BUCKETS,
    WINDOWS_MINUTES,
    Failure,
    Histogram,
    JobCounts,
    ModelTotals,
    Percentiles,
    WindowStats,
    merge_totals,
)
from services.db.schema import UTCDateTime, jobs
from services.db.session import reading
from services.types import TERMINAL_STATUSES, WORKER_LOST, JobStatus, PriceCard, Priority
from services.usage.pricing import price_job

# Most rows read for the percentile windows; beyond it the newest rows are used.
WINDOW_ROW_CAP = 20_000
RECENT_FAILURES = 20
# How long after a job's completed_at before its row is folded into the cached totals: covers
# the gap between a worker reading its clock and committing, and clock skew between hosts.
SETTLE = timedelta(minutes=5)
# The settled prefix advances in steps this long, so most scrapes run only the "recent" query.
SETTLE_STEP = timedelta(minutes=1)
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)


class seconds_between(FunctionElement[float]):  # noqa: N801 (SQL function style)
    """``end - start`` in seconds (float), for two UTC timestamp columns."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


@compiles(seconds_between)
def _seconds_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores timestamps as ISO text; julianday() reads them (days, fractional).
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(seconds_between, "postgresql")
def _seconds_postgres(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION)"


def _wait() -> ColumnElement[float]:
    """Time queued: ``queue_seconds`` (set at claim; a re-run's excludes its time on a dead
    worker), or, for rows from before it existed, created → started."""
    return func.coalesce(
        jobs.c.queue_seconds, seconds_between(jobs.c.created_at, jobs.c.started_at)
    )


def _run() -> seconds_between:
    return seconds_between(jobs.c.started_at, jobs.c.completed_at)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return round(sorted_values[int(rank) - 1], 3)


class SqlJobStats:
    """Read-only statistics over the ``jobs`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def counts(self) -> JobCounts:
        """Jobs by status, running jobs by model, oldest queued job per priority."""
        with reading(self._engine) as conn:
            by_status = {
                str(status): int(n)
                for status, n in conn.execute(
                    select(jobs.c.status, func.count()).group_by(jobs.c.status)
                )
            }
            running = {
                str(model): int(n)
                for model, n in conn.execute(
                    select(jobs.c.model, func.count())
                    .where(jobs.c.status == JobStatus.RUNNING.value)
                    .group_by(jobs.c.model)
                )
            }
            oldest = _oldest_queued(conn, None)
        for status in JobStatus:
            by_status.setdefault(status.value, 0)
        return JobCounts(by_status=by_status, running_by_model=running, oldest_queued=oldest)

    def backlog(self, models: Collection[str] | None) -> dict[Priority, tuple[int, datetime]]:
        """(queued jobs, the oldest one's created_at) per priority among ``models`` (all when
        None): the queue of record's depth. A count reads the queued rows' index entries; the
        admin views cache their snapshot, so it runs at most once a second."""
        query = (
            select(jobs.c.priority, func.count(), func.min(jobs.c.created_at))
            .where(jobs.c.status == JobStatus.QUEUED.value)
            .group_by(jobs.c.priority)
        )
        if models is not None:
            query = query.where(jobs.c.model.in_(list(models)))
        with reading(self._engine) as conn:
            rows = conn.execute(query).all()
        return {Priority(p): (int(n), created) for p, n, created in rows}

    def windows(
        self, now: datetime, minutes: Sequence[int] = WINDOWS_MINUTES, cap: int = WINDOW_ROW_CAP
    ) -> tuple[WindowStats, ...]:
        """Throughput and p50/p95 queue wait and run time of jobs finished in each window."""
        since = now - timedelta(minutes=max(minutes))
        # Durations are computed in SQL: parsing three timestamps per row in Python would
        # dominate the scrape when the window holds thousands of rows.
        query = (
            select(
                jobs.c.status,
                seconds_between(jobs.c.completed_at, literal(now, UTCDateTime())).label("age"),
                case((jobs.c.started_at.is_not(None), _wait()), else_=None).label("wait"),
                case((jobs.c.started_at.is_not(None), _run()), else_=None).label("run"),
            )
            .where(jobs.c.completed_at >= since, jobs.c.status.in_(_TERMINAL))
            .order_by(jobs.c.completed_at.desc())
            .limit(cap + 1)
        )
        with reading(self._engine) as conn:
            rows = list(conn.execute(query))
        truncated = len(rows) > cap
        rows = rows[:cap]
        stats = []
        for window in sorted(minutes):
            inside = [r for r in rows if r.age <= window * 60]
            by_status: dict[str, int] = {}
            for r in inside:
                by_status[r.status] = by_status.get(r.status, 0) + 1
            waits = sorted(float(r.wait) for r in inside if r.wait is not None)
            runs = sorted(float(r.run) for r in inside if r.run is not None)
            stats.append(
                WindowStats(
                    minutes=window,
                    completed=len(inside),
                    by_status=by_status,
                    queue_wait=Percentiles(percentile(waits, 50), percentile(waits, 95)),
                    run_time=Percentiles(percentile(runs, 50), percentile(runs, 95)),
                    truncated=truncated,
                )
            )
        return tuple(stats)

    def recent_failures(self, limit: int = RECENT_FAILURES) -> tuple[Failure, ...]:
        """The jobs failed most recently (the admin view lists them, each with a retry)."""
        query = (
            select(
                jobs.c.id, jobs.c.owner_id, jobs.c.model, jobs.c.error_code,
                jobs.c.error_message, jobs.c.completed_at,
            )
            .where(jobs.c.status == JobStatus.FAILED.value)
            .order_by(jobs.c.completed_at.desc())
            .limit(limit)
        )  # fmt: skip
        with reading(self._engine) as conn:
            return tuple(
                Failure(r.id, r.owner_id, r.model, r.error_code, r.error_message, r.completed_at)
                for r in conn.execute(query)
            )

    def totals(
        self, after: datetime | None = None, upto: datetime | None = None
    ) -> dict[str, ModelTotals]:
        """Per-model sums over finished jobs with ``after < completed_at <= upto`` (open ends)."""
        wait = _wait()
        run = _run()
        timed = jobs.c.started_at.is_not(None)
        billed = jobs.c.prompt_tokens.is_not(None)

        def count_if(condition: ColumnElement[bool]) -> Any:
            return func.sum(case((condition, 1), else_=0))

        # Group by the card's text: PostgreSQL's json type has no equality operator.
        price_text = cast(jobs.c.price, Text)
        columns = [
            jobs.c.model,
            jobs.c.status,
            price_text.label("price"),
            func.count().label("n"),
            func.sum(func.coalesce(jobs.c.prompt_tokens, 0)).label("prompt"),
            func.sum(func.coalesce(jobs.c.completion_tokens, 0)).label("completion"),
            # The presenter bills images only for jobs with usage; so do we.
            func.sum(case((billed, func.json_array_length(jobs.c.images)), else_=0)).label("img"),
            count_if(timed).label("timed"),
            func.sum(case((timed, wait), else_=0.0)).label("wait_sum"),
            func.sum(case((timed, run), else_=0.0)).label("run_sum"),
            count_if(jobs.c.error_code == WORKER_LOST).label("lost"),
            *(count_if(and_(timed, wait <= b)) for b in QUEUE_WAIT_BUCKETS),
            *(count_if(and_(timed, run <= b)) for b in RUN_TIME_BUCKETS),
        ]
        conditions: list[ColumnElement[bool]] = [
            jobs.c.status.in_(_TERMINAL),
            jobs.c.completed_at.is_not(None),
        ]
        if after is not None:
            conditions.append(jobs.c.completed_at > after)
        if upto is not None:
            conditions.append(jobs.c.completed_at <= upto)
        query = (
            select(*columns).where(*conditions).group_by(jobs.c.model, jobs.c.status, price_text)
        )
        with reading(self._engine) as conn:
            rows = list(conn.execute(query))
        result: dict[str, ModelTotals] = {}
        n_wait = len(QUEUE_WAIT_BUCKETS)
        for row in rows:
            values = list(row)
            buckets = [int(v or 0) for v in values[11:]]
            prompt, completion, images = (
                int(row.prompt or 0),
                int(row.completion or 0),
                int(row.img or 0),
            )
            card = PriceCard.from_json(_json(row.price))
            cost = price_job(card, prompt, completion, images)
            part = ModelTotals(
                jobs_by_status={row.status: int(row.n)},
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost={card.currency: cost.total},
                queue_wait=Histogram(
                    QUEUE_WAIT_BUCKETS,
                    buckets[:n_wait],
                    int(row.timed or 0),
                    float(row.wait_sum or 0),
                ),
                run_time=Histogram(
                    RUN_TIME_BUCKETS, buckets[n_wait:], int(row.timed or 0), float(row.run_sum or 0)
                ),
                worker_lost=int(row.lost or 0),
            )
            result.setdefault(row.model, ModelTotals()).add(part)
        return result


def _json(raw: Any) -> dict[str, str]:
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return {str(k): str(v) for k, v in dict(data).items()}


class TotalsCache:
    """Counter totals without re-reading history on every scrape.

    Rows that finished more than :data:`SETTLE` ago are summed once and kept (per process); each
    call adds only the rows since that watermark. Every process therefore reports the SQL truth,
    so counters agree across gunicorn workers without shared state. Jobs deleted later (retention)
    stay counted, as a Prometheus counter should.
    """

    def __init__(
        self, stats: SqlJobStats, settle: timedelta = SETTLE, step: timedelta = SETTLE_STEP
    ) -> None:
        self._stats = stats
        self._settle = settle
        self._step = step
        self._prefix: dict[str, ModelTotals] = {}
        self._watermark: datetime | None = None
        self._lock = threading.Lock()

    def totals(self, now: datetime) -> dict[str, ModelTotals]:
        cut = now - self._settle
        with self._lock:
            if self._watermark is None or cut >= self._watermark + self._step:
                settled = self._stats.totals(after=self._watermark, upto=cut)
                self._prefix = merge_totals(self._prefix, settled)
                self._watermark = cut
            recent = self._stats.totals(after=self._watermark)
            return merge_totals(self._prefix, recent)


def _oldest_queued(conn: Connection, models: Collection[str] | None) -> dict[Priority, datetime]:
    """One index seek per priority (ix_jobs_status_priority_created), however deep the queue: a
    GROUP BY would read every queued row. ``models`` narrows it to one per-model queue's jobs."""
    oldest = {}
    for priority in Priority:
        query = select(func.min(jobs.c.created_at)).where(
            jobs.c.status == JobStatus.QUEUED.value, jobs.c.priority == priority.value
        )
        if models is not None:
            query = query.where(jobs.c.model.in_(list(models)))
        created = conn.execute(query).scalar_one()
        if created is not None:
            oldest[priority] = created
    return oldest
