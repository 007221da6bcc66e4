"""The dispatcher's reads and writes of the job table (SQL is the queue of record).

A queued job with ``dispatched_at`` NULL waits in the backlog; the dispatcher sets it (a
compare-and-set) just before it publishes the job's message, and the worker's claim clears it,
so the rows with it set are exactly the broker's buffer: few, and indexed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.sql import ColumnElement

from services.db.schema import jobs, key_quotas
from services.db.session import reading, writing
from services.dispatch.fair import KeyLoad, Waiting
from services.jobs.store import JobRoute
from services.types import JobStatus, Priority

QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value


@dataclass(frozen=True)
class QueueLoad:
    """A queue's jobs in flight (running or in the broker), those in the broker, per-key loads."""

    in_flight: int
    handed_out: int
    keys: dict[str, KeyLoad]


class SqlDispatchStore:
    """What one dispatch pass reads (loads, backlog heads) and writes (dispatched marks)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def in_flight(self, models: Collection[str]) -> QueueLoad:
        """Jobs in flight: on ``models`` (running or handed out) and each key's load. A key's
        load counts its jobs in flight on these models and on every model (its limit counts
        them all)."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.owner_id, jobs.c.model, jobs.c.status, func.count())
                .where(_in_flight())
                .group_by(jobs.c.owner_id, jobs.c.model, jobs.c.status)
            ).all()
        on_queue: Counter[str] = Counter()
        anywhere: Counter[str] = Counter()
        handed_out = 0
        for owner, model, status, count in rows:
            anywhere[owner] += count
            if model in models:
                on_queue[owner] += count
                handed_out += count if status == QUEUED else 0
        loads = {owner: KeyLoad(on_queue[owner], anywhere[owner]) for owner in anywhere}
        return QueueLoad(sum(on_queue.values()), handed_out, loads)

    def limits(self, owners: Collection[str]) -> dict[str, int]:
        """Each of ``owners``' in-flight limit (``max_running``/``max_concurrency``), if any."""
        if not owners:
            return {}
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(
                    key_quotas.c.key_id, key_quotas.c.max_running, key_quotas.c.max_concurrency
                ).where(key_quotas.c.key_id.in_(list(owners)))
            ).all()
        limits = {key: [n for n in (a, b) if n is not None] for key, a, b in rows}
        return {key: min(values) for key, values in limits.items() if values}

    def waiting(self, models: Collection[str]) -> dict[Priority, dict[str, int]]:
        """Jobs of ``models`` waiting (not handed out), per priority class and key."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.priority, jobs.c.owner_id, func.count())
                .where(*_waiting(models))
                .group_by(jobs.c.priority, jobs.c.owner_id)
            ).all()
        found: dict[Priority, dict[str, int]] = {}
        for priority, owner, count in rows:
            found.setdefault(Priority(priority), {})[owner] = int(count)
        return found

    def oldest(
        self, models: Collection[str], priority: Priority, owner: str, limit: int
    ) -> list[Waiting]:
        """A key's ``limit`` oldest waiting jobs of ``models`` in one priority class."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.created_at)
                .where(*_waiting(models), jobs.c.priority == priority.value)
                .where(jobs.c.owner_id == owner)
                .order_by(jobs.c.created_at, jobs.c.id)
                .limit(limit)
            ).all()
        return [Waiting(job_id, owner, priority, created) for job_id, created in rows]

    def mark_dispatched(self, job_ids: Sequence[str], now: datetime) -> list[str]:
        """Set ``dispatched_at`` on each job still queued and not handed out (one statement);
        those marked, in ``job_ids``' order. A job canceled or expired meanwhile is skipped."""
        if not job_ids:
            return []
        with writing(self._engine) as conn:
            rows = conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(list(job_ids)), jobs.c.status == QUEUED)
                .where(jobs.c.dispatched_at.is_(None))
                .values(dispatched_at=now)
                .returning(jobs.c.id)
            ).all()
        marked = {row[0] for row in rows}
        return [job_id for job_id in job_ids if job_id in marked]

    def undispatch(self, job_ids: Collection[str]) -> int:
        """Back to the backlog: jobs whose message never reached, or left, the broker."""
        if not job_ids:
            return 0
        with writing(self._engine) as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(list(job_ids)), jobs.c.status == QUEUED)
                .where(jobs.c.dispatched_at.is_not(None))
                .values(dispatched_at=None)
            )
        return int(result.rowcount)

    def buffered_before(self, cutoff: datetime, limit: int) -> list[tuple[JobRoute, datetime]]:
        """Jobs handed to the broker before ``cutoff`` and not claimed yet, with that time."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.priority, jobs.c.model, jobs.c.dispatched_at)
                .where(jobs.c.dispatched_at < cutoff, jobs.c.status == QUEUED)
                .order_by(jobs.c.dispatched_at)
                .limit(limit)
            ).all()
        return [(JobRoute(i, Priority(p), m), at) for i, p, m, at in rows]


def _in_flight() -> ColumnElement[bool]:
    """Running, or handed to the broker and not claimed yet."""
    return (jobs.c.status == RUNNING) | (
        (jobs.c.dispatched_at.is_not(None)) & (jobs.c.status == QUEUED)
    )


def _waiting(models: Collection[str]) -> tuple[ColumnElement[bool], ...]:
    return (
        jobs.c.status == QUEUED,
        jobs.c.model.in_(list(models)),
        jobs.c.dispatched_at.is_(None),
    )
