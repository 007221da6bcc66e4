"""Retrying a job that ended: ``POST /v1/jobs/{id}/retry`` and the admin view's retry action.

A failed, expired or canceled job is queued again under the same id (``JobSubmitStore.retry``):
its next claim is a new attempt, so nothing of the old run can finish it, and each attempt that
did work is billed once (``services.usage.ledger``). A retry passes the quotas of a new submit
(the key's rate limit, queued-jobs limit, and spend cap with the job's estimated maximum; its
running and concurrency limits hold it back at dispatch, as any queued job). Like a submit, it
is committed to SQL (the queue of record, with ``dispatched_at`` cleared) and then the
dispatcher is nudged; a lost nudge only delays it to the dispatcher's next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from services.catalog.registry import ModelRegistry
from services.errors import Conflict
from services.jobs.events import JobEvents
from services.jobs.handoff import DispatchNudge
from services.jobs.store import JobSubmitStore
from services.jobs.types import Job
from services.types import JobStatus
from services.usage.quotas import QuotaGate

log = logging.getLogger("loupe.jobs")

# Jobs finished this close to their retention deadline are not retried: the retention sweep may
# be deleting their images already (a slow sweep, clocks of different hosts).
RETENTION_MARGIN = timedelta(minutes=5)


class JobRetrier:
    """Queues ended jobs again; ``retention`` is how long finished jobs keep their data (None:
    for ever)."""

    def __init__(
        self,
        *,
        store: JobSubmitStore,
        nudge: DispatchNudge,
        registry: ModelRegistry,
        quotas: QuotaGate,
        events: JobEvents,
        clock: Callable[[], datetime],
        retention: timedelta | None,
    ) -> None:
        self._store = store
        self._nudge = nudge
        self._registry = registry
        self._quotas = quotas
        self._events = events
        self._clock = clock
        self._retention = retention

    def retry(self, job_id: str, owner_id: str) -> Job:
        """Queue the owner's ended job again and return it (queued). Another key's job is 404;
        409 for a job that cannot be retried; 429/402 as for a new submit."""
        job = self._store.get_for_owner(job_id, owner_id)
        self._check(job, self._clock())
        self._quotas.check_rate(owner_id)
        return self._requeue(job)

    def retry_as_admin(self, job_id: str) -> Job:
        """:meth:`retry` for any key's job: the owner's queued-jobs and spend limits apply, its
        per-minute limit does not (the request is the admin's, not the key's)."""
        job = self._store.get(job_id)
        self._check(job, self._clock())
        return self._requeue(job)

    def _requeue(self, job: Job) -> Job:
        now = self._clock()
        with self._quotas.admit(job.owner_id, job.estimated_cost_max or Decimal(0)):
            retried = self._store.retry(job.id, now, finished_after=self._kept_after(now))
        if retried is None:  # it changed since we read it: say what it is now
            self._check(self._store.get(job.id), now)
            raise Conflict(f"Job {job.id} changed state while retrying; retry.", code="job_busy")
        log.info("job %s: retried from %s", job.id, job.status.value)
        self._hand_on(retried)
        self._events.job_changed(retried)
        return retried

    def _hand_on(self, job: Job) -> None:
        """Committed: the job is safe in SQL and will run; the nudge only makes it run sooner
        (as a new submit's does)."""
        self._nudge.nudge(self._registry.queue_for(job.model))

    def _check(self, job: Job, now: datetime) -> None:
        """Raise the 409 that says why ``job`` cannot be retried, if it cannot."""
        if not job.status.terminal:
            raise Conflict(
                f"Job {job.id} is {job.status.value}; only a job that ended can be retried.",
                code="job_not_finished",
            )
        if job.status is JobStatus.SUCCEEDED:
            raise Conflict(
                f"Job {job.id} succeeded; only failed, expired or canceled jobs can be retried "
                "(submit it again for another answer).",
                code="job_not_retryable",
            )
        if job.data_removed_at is not None or not self._kept(job, now):
            raise Conflict(
                f"Job {job.id}'s images and prompt were removed after the retention period; "
                "submit it again.",
                code="job_data_removed",
            )
        if job.model not in self._registry:
            raise Conflict(
                f"Job {job.id}'s model {job.model!r} is not served here any more.",
                code="model_not_served",
            )

    def _kept(self, job: Job, now: datetime) -> bool:
        cutoff = self._kept_after(now)
        return cutoff is None or job.completed_at is None or job.completed_at >= cutoff

    def _kept_after(self, now: datetime) -> datetime | None:
        """Jobs finished before this may be losing their data to retention (None: never)."""
        if self._retention is None:
            return None
        return now - self._retention + RETENTION_MARGIN
