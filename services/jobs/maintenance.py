"""Periodic upkeep of the job store (run by Celery beat through thin tasks in workers/tasks/).

- ``expire_overdue``: a queued job past its TTL ends ``expired`` even when no worker pulls its
  message (say, every worker is down); the worker also expires it when it does pull it.
- ``remove_old_data``: after the retention period, a finished job's images are deleted from the
  object store (unless another job still keeps the same content-addressed image) and its prompt
  and output are cleared. Usage and cost stay: they are accounting, not user data.
- ``requeue_lost``: a queued job whose message the broker no longer holds is published again.
  The API commits a job, then publishes its message; a process killed in between, or a broker
  that lost its data (Redis restarted without persistence), leaves a job no worker will ever
  see. Publishing again is safe: a worker's claim runs a job once, whatever the duplicates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.jobs.events import JobEvents
from services.jobs.queue import QueuedMessages, TaskQueue
from services.jobs.store import JobStore
from services.storage.blobs import BlobStore

log = logging.getLogger("loupe.maintenance")


def expire_overdue(store: JobStore, events: JobEvents, now: datetime, limit: int = 500) -> int:
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
    store: JobStore, blobs: BlobStore, now: datetime, retention: timedelta, limit: int = 200
) -> RetentionReport:
    """Remove the data of jobs that finished before ``now - retention``."""
    cutoff = now - retention
    due = store.retention_due(cutoff, limit)
    batch = [job.id for job in due]
    deleted = 0
    for key in sorted({ref.key for job in due for ref in job.images}):
        if store.image_in_use(key, batch):
            continue  # a newer job keeps the same image
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


def requeue_lost(
    store: JobStore,
    broker: QueuedMessages,
    queue: TaskQueue,
    queue_name: str,
    now: datetime,
    grace: timedelta,
    limit: int = 1000,
) -> int:
    """Publish again the queued jobs older than ``grace`` that the broker holds no message for.

    ``grace`` covers the moment between the API's commit and its publish. The broker is read
    only when some job has been queued that long, so a healthy, drained system costs one
    indexed query.
    """
    stale = store.queued_since_before(now - grace, limit)
    if not stale:
        return 0
    held = broker.job_ids(queue_name)
    lost = [(job_id, priority) for job_id, priority in stale if job_id not in held]
    for job_id, priority in lost:
        queue.enqueue_inference(job_id, priority)
        log.warning("job %s: queued with no message in the broker; published it again", job_id)
    return len(lost)
