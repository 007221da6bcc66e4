"""Job persistence: a Protocol per role that uses the store, and the SQL adapter of them all.

Readers (``JobReader``), the API (``JobSubmitStore``), workers (``JobRunStore``) and the periodic
sweeps (``JobSweepStore``) each see only their part; ``JobStore`` is every role at once.

Every state change is a compare-and-set on ``status`` (and on ``attempts`` once running), so a
redelivered message, a duplicate worker or a racing cancel can never double-run or double-bill.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from services.db.schema import jobs
from services.db.session import reading, writing
from services.errors import Conflict, NotFound
from services.jobs.rows import insert_values, row_to_job
from services.jobs.types import Job, NewJob
from services.types import WORKER_LOST, JobStatus, Priority


@dataclass(frozen=True)
class JobFilter:
    """What ``GET /v1/jobs`` may filter on; ``None`` or empty means no filter."""

    statuses: tuple[JobStatus, ...] = ()
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cursor:
    """Position after the last job of a page (newest first: created_at, then id, descending)."""

    created_at: datetime
    job_id: str


class JobRoute(NamedTuple):
    """What it takes to publish a job's message again: its id, priority and model (queue)."""

    id: str
    priority: Priority
    model: str


class Billing(Protocol):
    """Charges a job inside the transaction that finishes it (``services.usage.ledger``): the
    store decides when, the ledger decides whether and how much, and neither imports the other."""

    def billable(self, status: JobStatus, prompt_tokens: int | None) -> bool: ...
    def record(self, conn: Connection, job_id: str, at: datetime) -> None: ...


class JobReader(Protocol):
    """Reading jobs: what the API shows and what ETAs are computed from."""

    def get(self, job_id: str) -> Job: ...
    def get_for_owner(self, job_id: str, owner_id: str) -> Job: ...
    def list_for_owner(
        self, owner_id: str, where: JobFilter, limit: int, after: Cursor | None
    ) -> list[Job]: ...
    def queued_ahead(self, job: Job, models: Collection[str] | None = None) -> int: ...
    def own_ahead(self, job: Job, models: Collection[str], cap: int) -> int: ...
    def completed_since(self, since: datetime, models: Collection[str] | None = None) -> int: ...


class JobSubmitStore(JobReader, Protocol):
    """The API's writes: submit (with its idempotency keys) and cancel."""

    def insert(self, job: NewJob, now: datetime) -> Job: ...
    def delete_queued(self, job_id: str) -> bool: ...
    def find_idempotent(self, owner_id: str, key: str) -> Job | None: ...
    def forget_idempotency_key(self, job_id: str) -> None: ...
    def request_hash(self, job_id: str) -> str | None: ...
    def cancel_queued(self, job_id: str, now: datetime) -> bool: ...
    def request_cancel(self, job_id: str, now: datetime) -> bool: ...
    def retry(
        self, job_id: str, now: datetime, *, finished_after: datetime | None = None
    ) -> Job | None: ...
    def image_in_use(self, image_key: str, excluding: Sequence[str]) -> bool: ...


class JobRunStore(Protocol):
    """A worker's writes: claim a job, then finish or release the attempt it holds."""

    def get(self, job_id: str) -> Job: ...
    def claim(self, job_id: str, now: datetime, lease: timedelta) -> Job | None: ...
    def renew(
        self, held: Collection[tuple[str, int]], now: datetime, lease: timedelta
    ) -> set[str]: ...
    def reclaim_lapsed(self, job_id: str, now: datetime, max_attempts: int) -> JobStatus | None: ...
    def release(self, job_id: str, attempt: int, now: datetime) -> bool: ...
    def succeed(
        self,
        job_id: str,
        attempt: int,
        now: datetime,
        *,
        text: str,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> bool: ...
    def fail(
        self,
        job_id: str,
        attempt: int,
        now: datetime,
        *,
        code: str,
        message: str,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> bool: ...
    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]: ...
    def cancel_running(
        self,
        job_id: str,
        attempt: int,
        now: datetime,
        *,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> bool: ...
    def expire_queued(self, job_id: str, now: datetime) -> bool: ...


WORKER_LOST_MESSAGE = "The job's worker was lost (crashed or unreachable) on every attempt."

# The ends a job can be retried from (POST /v1/jobs/{id}/retry).
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELED})
# A run's results: a retry clears them.
_RUN_RESULT = (
    "started_at",
    "completed_at",
    "cancel_requested_at",
    "error_code",
    "error_message",
    "output_text",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "billed",
)


def _requeued(now: datetime) -> dict[str, Any]:
    """The columns of a lapsed run handed out again: queued from ``now``."""
    return {
        "status": JobStatus.QUEUED.value,
        "started_at": None,
        "lease_expires_at": None,
        "queued_at": now,
        "dispatched_at": None,  # back in the backlog: the dispatcher hands it out again
    }


def _worker_lost(now: datetime, lost: int) -> dict[str, Any]:
    """The columns of a job that lost its worker ``lost`` times: failed, billed for nothing."""
    return {
        "status": JobStatus.FAILED.value,
        "completed_at": now,
        "lease_expires_at": None,
        "error_code": WORKER_LOST,
        "error_message": f"{WORKER_LOST_MESSAGE} ({lost} attempts)",
        "billed": False,
    }


def _retried(now: datetime, was: str, ttl: int | None) -> dict[str, Any]:
    """The columns of a job retried at ``now`` from status ``was``: queued from ``now`` with no
    run result, a new deadline from its ttl, no lost attempts; ``attempts`` is kept (the next
    claim makes the new attempt, so every fence of the old run stays shut)."""
    return {
        **dict.fromkeys(_RUN_RESULT),
        "status": JobStatus.QUEUED.value,
        "retried_from_status": was,
        "queued_at": now,
        "expires_at": None if ttl is None else now + timedelta(seconds=ttl),
        "lost_attempts": 0,
        "lease_expires_at": None,
        "dispatched_at": None,  # in the backlog again: the dispatcher hands it out
    }


class JobSweepStore(Protocol):
    """The periodic sweeps' reads and writes: expiry, lost messages and retention."""

    def get(self, job_id: str) -> Job: ...
    def overdue_queued(self, now: datetime, limit: int) -> list[str]: ...
    def expire_queued(self, job_id: str, now: datetime) -> bool: ...
    def lease_expired(self, now: datetime, limit: int) -> list[JobRoute]: ...
    def reclaim_lapsed(self, job_id: str, now: datetime, max_attempts: int) -> JobStatus | None: ...
    def retention_due(self, cutoff: datetime, limit: int) -> list[Job]: ...
    def image_in_use(self, image_key: str, excluding: Sequence[str]) -> bool: ...
    def remove_data(self, job_id: str, now: datetime) -> bool: ...


class JobStore(JobSubmitStore, JobRunStore, JobSweepStore, Protocol):
    """Every role at once: what a composition root builds and hands out by role."""


class SqlJobStore:
    """``JobStore`` (all its roles) over SQLAlchemy Core; works on SQLite and PostgreSQL."""

    def __init__(self, engine: Engine, *, billing: Billing) -> None:
        self._engine = engine
        self._billing = billing

    def insert(self, job: NewJob, now: datetime) -> Job:
        values = insert_values(job, now)
        try:
            with writing(self._engine) as conn:
                conn.execute(insert(jobs).values(**values))
        except IntegrityError as exc:
            if job.idempotency_key is None:
                raise
            # Another request with the same Idempotency-Key committed first.
            raise Conflict(
                "A job with this Idempotency-Key was created concurrently.",
                code="idempotency_key_in_use",
            ) from exc
        return self.get(job.id)

    def get(self, job_id: str) -> Job:
        with reading(self._engine) as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"No job {job_id!r}.", code="job_not_found")
        return row_to_job(row)

    def get_for_owner(self, job_id: str, owner_id: str) -> Job:
        job = self.get(job_id)
        if job.owner_id != owner_id:
            # Same answer as a missing job: never reveal that another key's job exists.
            raise NotFound(f"No job {job_id!r}.", code="job_not_found")
        return job

    def delete_queued(self, job_id: str) -> bool:
        with writing(self._engine) as conn:
            result = conn.execute(
                delete(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
            )
        return result.rowcount == 1

    def claim(self, job_id: str, now: datetime, lease: timedelta) -> Job | None:
        """queued → running with a lease until ``now + lease``; None if the job is not queued.

        A queued job past its TTL is never claimed: it is for ``expire_queued``. The time since
        the job was (last) queued is added to ``queue_seconds``. Fenced by ``attempts``, so of
        two workers claiming the same job one gets it."""
        start = self._claimable(job_id, now)
        if start is None:
            return None
        attempts, waited = start
        with writing(self._engine) as conn:
            result = conn.execute(
                update(jobs)
                .where(*_fence(job_id, JobStatus.QUEUED, attempts))
                .values(
                    status=JobStatus.RUNNING.value,
                    attempts=attempts + 1,
                    started_at=now,
                    lease_expires_at=now + lease,
                    queued_at=None,
                    queue_seconds=waited,
                    dispatched_at=None,  # out of the broker's buffer
                )
            )
            if result.rowcount != 1:
                return None
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one()
        return row_to_job(row)

    def _claimable(self, job_id: str, now: datetime) -> tuple[int, float] | None:
        """(attempts, queue seconds up to ``now``) of a queued job within its TTL, else None."""
        query = select(
            jobs.c.attempts, jobs.c.created_at, jobs.c.queued_at, jobs.c.queue_seconds
        ).where(
            jobs.c.id == job_id,
            jobs.c.status == JobStatus.QUEUED.value,
            or_(jobs.c.expires_at.is_(None), jobs.c.expires_at > now),
        )
        with reading(self._engine) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        since = row.queued_at or row.created_at
        waited = (row.queue_seconds or 0.0) + max(0.0, (now - since).total_seconds())
        return int(row.attempts), round(waited, 6)

    def renew(self, held: Collection[tuple[str, int]], now: datetime, lease: timedelta) -> set[str]:
        """Extend to ``now + lease`` the lease of each (job id, attempt) still running on that
        attempt; the ids renewed. A job missing from the answer is no longer held by us."""
        renewed = set()
        with writing(self._engine) as conn:
            for job_id, attempt in sorted(held):
                result = conn.execute(
                    update(jobs)
                    .where(*_fence(job_id, JobStatus.RUNNING, attempt))
                    .values(lease_expires_at=now + lease)
                )
                if result.rowcount == 1:
                    renewed.add(job_id)
        return renewed

    def reclaim_lapsed(self, job_id: str, now: datetime, max_attempts: int) -> JobStatus | None:
        """A running job whose lease lapsed before ``now`` (its worker died or lost us) counts
        one lost attempt: back to ``queued``, or ``failed``/``worker_lost`` (never billed) at
        ``max_attempts`` lost attempts. The new status, or None if the job had no lapsed lease."""
        lapsed = (jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < now)
        with reading(self._engine) as conn:
            row = conn.execute(
                select(jobs.c.attempts, jobs.c.lost_attempts).where(jobs.c.id == job_id, *lapsed)
            ).first()
        if row is None:
            return None
        lost = int(row.lost_attempts) + 1
        values = _requeued(now) if lost < max_attempts else _worker_lost(now, lost)
        where = (jobs.c.id == job_id, jobs.c.attempts == row.attempts, *lapsed)
        if not self._update(where, lost_attempts=lost, **values):
            return None
        return JobStatus(values["status"])

    def release(self, job_id: str, attempt: int, now: datetime) -> bool:
        """running → queued (from ``now``) after a transient failure, so a retry can claim it.

        It stays handed out (``dispatched_at``): the retry's message is the worker's to send."""
        return self._transition(
            job_id,
            attempt,
            status=JobStatus.QUEUED.value,
            started_at=None,
            lease_expires_at=None,
            queued_at=now,
            dispatched_at=now,
        )

    def succeed(
        self,
        job_id: str,
        attempt: int,
        now: datetime,
        *,
        text: str,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> bool:
        return self._transition(
            job_id,
            attempt,
            status=JobStatus.SUCCEEDED.value,
            completed_at=now,
            lease_expires_at=None,
            output_text=text,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def fail(
        self,
        job_id: str,
        attempt: int,
        now: datetime,
        *,
        code: str,
        message: str,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> bool:
        return self._transition(
            job_id,
            attempt,
            status=JobStatus.FAILED.value,
            completed_at=now,
            lease_expires_at=None,
            error_code=code,
            error_message=message,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def cancel_queued(self, job_id: str, now: datetime) -> bool:
        """queued → canceled: the job will never run (its queue message is skipped)."""
        return self._update(
            (jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value),
            status=JobStatus.CANCELED.value,
            completed_at=now,
            cancel_requested_at=now,
            error_code="canceled",
            error_message="The job was canceled before it started.",
            dispatched_at=None,
        )

    def request_cancel(self, job_id: str, now: datetime) -> bool:
        """Flag a running job; the worker holding it aborts its engine request."""
        return self._update(
            (
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.RUNNING.value,
                jobs.c.cancel_requested_at.is_(None),
            ),
            cancel_requested_at=now,
        )

    def retry(
        self, job_id: str, now: datetime, *, finished_after: datetime | None = None
    ) -> Job | None:
        """failed, expired or canceled → queued again from ``now``, under the same id (see
        :func:`_retried`); the job as now stored, or None if it is in no such status, changed
        meanwhile, or its data is removed (or, with ``finished_after``, finished before it:
        retention may be removing it). Fenced by status and ``attempts``."""
        kept: list[ColumnElement[bool]] = [jobs.c.data_removed_at.is_(None)]
        if finished_after is not None:
            kept.append(jobs.c.completed_at >= finished_after)
        with reading(self._engine) as conn:
            row = conn.execute(
                select(jobs.c.status, jobs.c.attempts, jobs.c.ttl_seconds).where(
                    jobs.c.id == job_id, jobs.c.status.in_([s.value for s in RETRYABLE]), *kept
                )
            ).first()
        if row is None:
            return None
        fence = (jobs.c.id == job_id, jobs.c.status == row.status, jobs.c.attempts == row.attempts)
        return self._changed(job_id, (*fence, *kept), _retried(now, row.status, row.ttl_seconds))

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.id).where(
                    jobs.c.id.in_(list(job_ids)), jobs.c.cancel_requested_at.is_not(None)
                )
            )
            return {row[0] for row in rows}

    def cancel_running(
        self,
        job_id: str,
        attempt: int,
        now: datetime,
        *,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> bool:
        return self._transition(
            job_id,
            attempt,
            status=JobStatus.CANCELED.value,
            completed_at=now,
            lease_expires_at=None,
            error_code="canceled",
            error_message="The job was canceled while it ran.",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def expire_queued(self, job_id: str, now: datetime) -> bool:
        """queued → expired when its TTL has passed: it never runs and is never charged."""
        return self._update(
            (
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.QUEUED.value,
                jobs.c.expires_at <= now,
            ),
            status=JobStatus.EXPIRED.value,
            completed_at=now,
            error_code="expired",
            error_message="The job was not started before its ttl_seconds ran out.",
            dispatched_at=None,
        )

    def overdue_queued(self, now: datetime, limit: int) -> list[str]:
        """Ids of queued jobs whose TTL has passed (oldest deadline first)."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.id)
                .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.expires_at <= now)
                .order_by(jobs.c.expires_at)
                .limit(limit)
            )
            return [row[0] for row in rows]

    def lease_expired(self, now: datetime, limit: int) -> list[JobRoute]:
        """Running jobs whose lease ran out: their worker died, or could not renew the lease
        (a live one renews it every few seconds)."""
        return self._routes(JobStatus.RUNNING, jobs.c.lease_expires_at, now, limit)

    def _routes(
        self, status: JobStatus, when: ColumnElement[Any], before: datetime, limit: int
    ) -> list[JobRoute]:
        """Jobs in ``status`` whose ``when`` column is before ``before``, earliest first."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.priority, jobs.c.model)
                .where(jobs.c.status == status.value, when < before)
                .order_by(when)
                .limit(limit)
            )
            return [JobRoute(row[0], Priority(row[1]), row[2]) for row in rows]

    def find_idempotent(self, owner_id: str, key: str) -> Job | None:
        with reading(self._engine) as conn:
            row = (
                conn.execute(
                    select(jobs).where(jobs.c.owner_id == owner_id, jobs.c.idempotency_key == key)
                )
                .mappings()
                .first()
            )
        return None if row is None else row_to_job(row)

    def forget_idempotency_key(self, job_id: str) -> None:
        """Free a key whose replay window has passed, so it can name a new job."""
        self._update((jobs.c.id == job_id,), idempotency_key=None)

    def request_hash(self, job_id: str) -> str | None:
        with reading(self._engine) as conn:
            value = conn.execute(
                select(jobs.c.request_hash).where(jobs.c.id == job_id)
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def list_for_owner(
        self, owner_id: str, where: JobFilter, limit: int, after: Cursor | None
    ) -> list[Job]:
        """The owner's jobs, newest first, after ``after``; at most ``limit``."""
        conditions = [jobs.c.owner_id == owner_id]
        if where.statuses:
            conditions.append(jobs.c.status.in_([s.value for s in where.statuses]))
        if where.model is not None:
            conditions.append(jobs.c.model == where.model)
        if where.created_after is not None:
            conditions.append(jobs.c.created_at >= where.created_after)
        if where.created_before is not None:
            conditions.append(jobs.c.created_at < where.created_before)
        for key, value in where.metadata.items():
            conditions.append(jobs.c.metadata[key].as_string() == value)
        if after is not None:
            conditions.append(
                or_(
                    jobs.c.created_at < after.created_at,
                    and_(jobs.c.created_at == after.created_at, jobs.c.id < after.job_id),
                )
            )
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs)
                .where(*conditions)
                .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
                .limit(limit)
            ).mappings()
            return [row_to_job(row) for row in rows]

    def queued_ahead(self, job: Job, models: Collection[str] | None = None) -> int:
        """Queued jobs a worker will take before ``job``: higher priority, or same and older
        (of ``models`` only: those that share its queue, when models have queues of their own)."""
        higher = [p.value for p in Priority if p.broker_priority < job.priority.broker_priority]
        query = (
            select(func.count())
            .select_from(jobs)
            .where(
                jobs.c.status == JobStatus.QUEUED.value,
                or_(
                    jobs.c.priority.in_(higher),
                    and_(
                        jobs.c.priority == job.priority.value,
                        jobs.c.created_at < job.created_at,
                    ),
                ),
            )
        )
        if models is not None:
            query = query.where(jobs.c.model.in_(list(models)))
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())

    def own_ahead(self, job: Job, models: Collection[str], cap: int) -> int:
        """The job's key's waiting jobs (not handed out) of its class on ``models`` that are
        older: at most
        ``cap`` are counted (one bounded index range), so the cost never grows past it."""
        older = (
            select(jobs.c.id)
            .where(
                jobs.c.status == JobStatus.QUEUED.value,
                jobs.c.model.in_(list(models)),
                jobs.c.priority == job.priority.value,
                jobs.c.owner_id == job.owner_id,
                jobs.c.created_at < job.created_at,
                jobs.c.dispatched_at.is_(None),  # those in the broker are counted apart
            )
            .limit(cap)
            .subquery()
        )
        with reading(self._engine) as conn:
            return int(conn.execute(select(func.count()).select_from(older)).scalar_one())

    def completed_since(self, since: datetime, models: Collection[str] | None = None) -> int:
        query = select(func.count()).select_from(jobs).where(jobs.c.completed_at >= since)
        if models is not None:
            query = query.where(jobs.c.model.in_(list(models)))
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())

    def retention_due(self, cutoff: datetime, limit: int) -> list[Job]:
        """Finished jobs older than ``cutoff`` whose data is still kept."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs)
                .where(jobs.c.completed_at < cutoff, jobs.c.data_removed_at.is_(None))
                .order_by(jobs.c.completed_at)
                .limit(limit)
            ).mappings()
            return [row_to_job(row) for row in rows]

    def image_in_use(self, image_key: str, excluding: Sequence[str]) -> bool:
        """Whether a job outside ``excluding`` still keeps this (content-addressed) image.

        A text match on the JSON column: retention runs rarely, in the background, so a scan of
        the jobs that keep their data is an acceptable price for not keeping a reference table.
        """
        sha256 = image_key.rsplit("/", 1)[-1]
        with reading(self._engine) as conn:
            found = conn.execute(
                select(jobs.c.id)
                .where(
                    jobs.c.data_removed_at.is_(None),
                    jobs.c.id.not_in(list(excluding)),
                    cast(jobs.c.images, Text).like(f"%{sha256}%"),
                )
                .limit(1)
            ).first()
        return found is not None

    def remove_data(self, job_id: str, now: datetime) -> bool:
        """Clear a finished job's prompt and output; its usage and cost stay."""
        return self._update(
            (
                jobs.c.id == job_id,
                jobs.c.completed_at.is_not(None),
                jobs.c.data_removed_at.is_(None),
            ),
            messages=[],
            output_text=None,
            data_removed_at=now,
        )

    def _changed(
        self, job_id: str, where: tuple[ColumnElement[bool], ...], values: dict[str, Any]
    ) -> Job | None:
        """One compare-and-set of ``job_id``, then the job as it committed; None if ``where``
        matched nothing."""
        with writing(self._engine) as conn:
            result = conn.execute(update(jobs).where(*where).values(**values))
            if result.rowcount != 1:
                return None
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one()
        return row_to_job(row)

    def _update(self, where: tuple[ColumnElement[bool], ...], **values: Any) -> bool:
        """One compare-and-set: True if exactly this job matched ``where`` and changed."""
        with writing(self._engine) as conn:
            result = conn.execute(update(jobs).where(*where).values(**values))
        return result.rowcount == 1

    def _transition(self, job_id: str, attempt: int, **values: Any) -> bool:
        """Change a running job we hold (fenced by ``attempts``); False if someone else holds it.

        A terminal change also writes the job's usage-ledger row in the same transaction.
        """
        status = JobStatus(values["status"])
        if status.terminal:
            values["billed"] = self._billing.billable(status, values.get("prompt_tokens"))
        with writing(self._engine) as conn:
            result = conn.execute(
                update(jobs).where(*_fence(job_id, JobStatus.RUNNING, attempt)).values(**values)
            )
            if result.rowcount == 1 and values.get("billed"):
                self._billing.record(conn, job_id, values["completed_at"])
        return result.rowcount == 1


def _fence(job_id: str, status: JobStatus, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """The compare-and-set of a change to ``job_id``: still in ``status`` on ``attempt``, so a
    redelivered message, a lapsed lease or a racing worker changes nothing."""
    return (jobs.c.id == job_id, jobs.c.status == status.value, jobs.c.attempts == attempt)
