"""Thin periodic task shells (scheduled by Celery beat): expiry, retention (jobs and uploaded
files), lost-message and webhook sweeps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Task, shared_task

from services.jobs.maintenance import expire_overdue, remove_old_data, requeue_lost
from services.jobs.queue import RedisQueuedMessages
from services.webhooks.sweep import requeue_overdue
from workers.context import get_worker_context

EXPIRE_TASK = "loupe.maintenance.expire_overdue"
RETENTION_TASK = "loupe.maintenance.remove_old_data"
WEBHOOK_SWEEP_TASK = "loupe.maintenance.requeue_overdue_webhooks"
LOST_JOBS_TASK = "loupe.maintenance.requeue_lost_jobs"
# A job queued this long with no message was lost between commit and publish (or by the broker);
# far longer than the API takes from its commit to its publish.
LOST_JOB_GRACE = timedelta(minutes=2)
# An attempt this late lost its message (its worker died, or the broker was down); longer than
# a POST's timeout plus the stale-claim margin, so a slow attempt is never taken for lost.
WEBHOOK_GRACE = timedelta(minutes=5)


@shared_task(name=EXPIRE_TASK, bind=True, ignore_result=True)
def expire_overdue_jobs(self: Task[Any, Any]) -> int:
    ctx = get_worker_context(self.app.conf.loupe_settings)
    return expire_overdue(ctx.store, ctx.events, ctx.clock())


@shared_task(name=RETENTION_TASK, bind=True, ignore_result=True)
def remove_old_job_data(self: Task[Any, Any]) -> int:
    ctx = get_worker_context(self.app.conf.loupe_settings)
    if ctx.settings.retention_seconds == 0:
        return 0  # keep everything
    retention = timedelta(seconds=ctx.settings.retention_seconds)
    files = ctx.container.files if ctx.container is not None else None
    kept = files.keeps_image if files is not None else (lambda key: False)
    jobs = remove_old_data(ctx.store, ctx.blobs, ctx.clock(), retention, kept_elsewhere=kept).jobs
    return jobs + (files.remove_expired(ctx.clock()) if files is not None else 0)


@shared_task(name=WEBHOOK_SWEEP_TASK, bind=True, ignore_result=True)
def requeue_overdue_webhooks(self: Task[Any, Any]) -> int:
    ctx = get_worker_context(self.app.conf.loupe_settings)
    container = ctx.container
    if container is None or container.webhook_store is None or container.webhook_queue is None:
        return 0
    return requeue_overdue(
        container.webhook_store, container.webhook_queue, ctx.clock(), WEBHOOK_GRACE
    )


@shared_task(name=LOST_JOBS_TASK, bind=True, ignore_result=True)
def requeue_lost_jobs(self: Task[Any, Any]) -> int:
    ctx = get_worker_context(self.app.conf.loupe_settings)
    if ctx.container is None:
        return 0
    broker = RedisQueuedMessages.from_url(ctx.settings.broker_url)
    try:
        return requeue_lost(
            ctx.store,
            broker,
            ctx.container.queue,
            ctx.registry,
            ctx.clock(),
            LOST_JOB_GRACE,
        )
    finally:
        broker.close()
