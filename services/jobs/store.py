"""Job persistence: the ``JobStore`` Protocol and its SQL adapter.

Every state change is a compare-and-set on ``status`` (and on ``attempts`` once running), so a
redelivered message, a duplicate worker or a racing cancel can never double-run or double-bill.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, and_, delete, insert, or_, select, update
from sqlalchemy.engine import RowMapping

from services.db.errors import translate_db_errors
from services.db.schema import jobs
from services.errors import NotFound
from services.jobs.models import (
    ImageRef,
    Job,
    JobStatus,
    Message,
    NewJob,
    PriceCard,
    SamplingParams,
)


class JobStore(Protocol):
    def insert(self, job: NewJob, now: datetime) -> Job: ...
    def get(self, job_id: str) -> Job: ...
    def get_for_owner(self, job_id: str, owner_id: str) -> Job: ...
    def delete_queued(self, job_id: str) -> bool: ...
    def claim(self, job_id: str, now: datetime, lease: timedelta) -> Job | None: ...
    def release(self, job_id: str, attempt: int) -> bool: ...
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
    def cancel_queued(self, job_id: str, now: datetime) -> bool: ...
    def request_cancel(self, job_id: str, now: datetime) -> bool: ...
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


class SqlJobStore:
    """``JobStore`` over SQLAlchemy Core; works on SQLite and PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, job: NewJob, now: datetime) -> Job:
        values = {
            "id": job.id,
            "owner_id": job.owner_id,
            "model": job.model,
            "status": JobStatus.QUEUED.value,
            "messages": [m.to_json() for m in job.messages],
            "images": [i.to_json() for i in job.images],
            "params": job.params.to_json(),
            "price": job.price.to_json(),
            "metadata": dict(job.metadata),
            "timeout_seconds": job.timeout_seconds,
            "attempts": 0,
            "created_at": now,
        }
        with translate_db_errors(), self._engine.begin() as conn:
            conn.execute(insert(jobs).values(**values))
        return self.get(job.id)

    def get(self, job_id: str) -> Job:
        with translate_db_errors(), self._engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"No job {job_id!r}.", code="job_not_found")
        return _row_to_job(row)

    def get_for_owner(self, job_id: str, owner_id: str) -> Job:
        job = self.get(job_id)
        if job.owner_id != owner_id:
            # Same answer as a missing job: never reveal that another key's job exists.
            raise NotFound(f"No job {job_id!r}.", code="job_not_found")
        return job

    def delete_queued(self, job_id: str) -> bool:
        with translate_db_errors(), self._engine.begin() as conn:
            result = conn.execute(
                delete(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
            )
        return result.rowcount == 1

    def claim(self, job_id: str, now: datetime, lease: timedelta) -> Job | None:
        """queued → running (or take over a running job whose lease expired). None if not ours."""
        claimable = or_(
            jobs.c.status == JobStatus.QUEUED.value,
            and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < now),
        )
        with translate_db_errors(), self._engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, claimable)
                .values(
                    status=JobStatus.RUNNING.value,
                    attempts=jobs.c.attempts + 1,
                    started_at=now,
                    lease_expires_at=now + lease,
                )
            )
            if result.rowcount != 1:
                return None
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one()
        return _row_to_job(row)

    def release(self, job_id: str, attempt: int) -> bool:
        """running → queued after a transient failure, so a retry can claim it again."""
        return self._transition(
            job_id,
            attempt,
            status=JobStatus.QUEUED.value,
            started_at=None,
            lease_expires_at=None,
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
        with translate_db_errors(), self._engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.CANCELED.value,
                    completed_at=now,
                    cancel_requested_at=now,
                    error_code="canceled",
                    error_message="The job was canceled before it started.",
                )
            )
        return result.rowcount == 1

    def request_cancel(self, job_id: str, now: datetime) -> bool:
        """Flag a running job; the worker holding it aborts its engine request."""
        with translate_db_errors(), self._engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status == JobStatus.RUNNING.value,
                    jobs.c.cancel_requested_at.is_(None),
                )
                .values(cancel_requested_at=now)
            )
        return result.rowcount == 1

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        with translate_db_errors(), self._engine.connect() as conn:
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

    def _transition(self, job_id: str, attempt: int, **values: Any) -> bool:
        """Change a running job we hold (fenced by ``attempts``); False if someone else holds it."""
        with translate_db_errors(), self._engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status == JobStatus.RUNNING.value,
                    jobs.c.attempts == attempt,
                )
                .values(**values)
            )
        return result.rowcount == 1


def _row_to_job(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        owner_id=row["owner_id"],
        model=row["model"],
        status=JobStatus(row["status"]),
        messages=tuple(Message.from_json(m) for m in row["messages"]),
        images=tuple(ImageRef.from_json(i) for i in row["images"]),
        params=SamplingParams.from_json(row["params"]),
        price=PriceCard.from_json(row["price"]),
        timeout_seconds=row["timeout_seconds"],
        metadata=dict(row["metadata"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        output_text=row["output_text"],
        finish_reason=row["finish_reason"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        attempts=row["attempts"],
        cancel_requested_at=row["cancel_requested_at"],
    )
