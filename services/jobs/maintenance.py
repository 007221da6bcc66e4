"""Periodic upkeep of the job store (run by Celery beat through thin tasks in workers/tasks/).

- ``expire_overdue``: a queued job past its TTL ends ``expired`` even when no worker pulls its
  message (say, every worker is down); the worker also expires it when it does pull it.
- ``remove_old_data``: after the retention period, a finished job's images are deleted from the
  object store (unless another job still keeps the same content-addressed image) and its prompt
  and output are cleared. Usage and cost stay: they are accounting, not user data.
- ``reclaim_lapsed_leases``: a running job whose lease lapsed (its worker died; a live one
  renews it every ``LOUPE_LEASE_RENEW_SECONDS``) counts a lost attempt (``reclaim_lapsed``):
  back to the backlog for the dispatcher to hand out again, or ``failed``/``worker_lost`` after
  ``LOUPE_MAX_ATTEMPTS``, so a job that kills its worker every time stops. The dispatcher runs
  it every ``LOUPE_LOST_SWEEP_SECONDS`` (``services.dispatch``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from services.jobs.events import JobEvents
from services.jobs.store import JobRoute, JobSweepStore
from services.storage.blobs import BlobStore
from services.types import JobStatus

log = logging.getLogger("loupe.maintenance")


def expire_overdue(store: JobSweepStore, events: JobEvents, now: datetime, limit: int = 500) -> int:
    """Expire queued jobs whose TTL has passed; returns how many this call expired."""
    expired = 0
    for job_id in store.overdue_queued(now, limit):
        if store.expire_queued(job_id, now):  # a worker may have claimed it meanwhile
            expired += 1
            events.job_changed(store.get(job_id))
    if expired:
        log.info("expired %d queued job(s) past their ttl", expired)
    return expired


@dataclass(frozen=True)
class RetentionReport:
    jobs: int
    images_deleted: int


def remove_old_data(
    store: JobSweepStore,
    blobs: BlobStore,
    now: datetime,
    retention: timedelta,
    limit: int = 200,
    kept_elsewhere: Callable[[str], bool] = lambda key: False,
) -> RetentionReport:
    """Remove the data of jobs that finished before ``now - retention``.

    ``kept_elsewhere(key)``: whether something besides jobs (an uploaded file) keeps the image.
    """
    cutoff = now - retention
    due = store.retention_due(cutoff, limit)
    batch = [job.id for job in due]
    deleted = 0
    for key in sorted({ref.key for job in due for ref in job.images}):
        if store.image_in_use(key, batch) or kept_elsewhere(key):
            continue  # a newer job, or an uploaded file, keeps the same image
        modified = blobs.modified_at(key)
        if modified is not None and modified >= cutoff:
            continue  # stored again since the cutoff: a job being submitted may need it
        if modified is not None:
            blobs.delete(key)
            deleted += 1
    cleared = sum(1 for job in due if store.remove_data(job.id, now))
    if cleared:
        log.info("retention: cleared %d job(s), deleted %d image(s)", cleared, deleted)
    return RetentionReport(jobs=cleared, images_deleted=deleted)


class QueueRoutes(Protocol):
    """Which queue carries a model's jobs (``ModelRegistry`` is one)."""

    def queue_for(self, model: str) -> str: ...
    def queues(self) -> tuple[str, ...]: ...


def reclaim_lapsed_leases(
    store: JobSweepStore, events: JobEvents, now: datetime, max_attempts: int, limit: int
) -> list[JobRoute]:
    """The lapsed-lease jobs this call queued again; those at ``max_attempts`` end here."""
    requeued = []
    for job in store.lease_expired(now, limit):
        status = store.reclaim_lapsed(job.id, now, max_attempts)
        if status is JobStatus.QUEUED:
            requeued.append(job)
        elif status is not None:
            log.warning("job %s lost its worker %d times: %s", job.id, max_attempts, status.value)
            events.job_changed(store.get(job.id))
    return requeued
