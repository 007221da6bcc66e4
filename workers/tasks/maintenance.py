"""Thin periodic task shells (scheduled by Celery beat): expiry, retention (jobs and uploaded
files) and webhook sweeps. Lost jobs are the dispatcher's (``services.dispatch``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Task, shared_task

from services.jobs.maintenance import expire_overdue, remove_old_data
from services.webhooks.sweep import requeue_overdue
from workers.roots import roots_of

EXPIRE_TASK = "loupe.maintenance.expire_overdue"
RETENTION_TASK = "loupe.maintenance.remove_old_data"
WEBHOOK_SWEEP_TASK = "loupe.maintenance.requeue_overdue_webhooks"
# An attempt this late lost its message (its worker died, or the broker was down); longer than
# a POST's timeout plus the stale-claim margin, so a slow attempt is never taken for lost.
WEBHOOK_GRACE = timedelta(minutes=5)


@shared_task(name=EXPIRE_TASK, bind=True, ignore_result=True)
def expire_overdue_jobs(self: Task[Any, Any]) -> int:
    ctx = roots_of(self.app).light()
    return expire_overdue(ctx.jobs, ctx.events, ctx.clock())


@shared_task(name=RETENTION_TASK, bind=True, ignore_result=True)
def remove_old_job_data(self: Task[Any, Any]) -> int:
    ctx = roots_of(self.app).light()
    if not ctx.retention:
        return 0  # keep everything
    now = ctx.clock()
    kept = ctx.files.keeps_image
    jobs = remove_old_data(ctx.jobs, ctx.blobs, now, ctx.retention, kept_elsewhere=kept).jobs
    return jobs + ctx.files.remove_expired(ctx.clock())


@shared_task(name=WEBHOOK_SWEEP_TASK, bind=True, ignore_result=True)
def requeue_overdue_webhooks(self: Task[Any, Any]) -> int:
    deliveries = roots_of(self.app).light().deliveries
    return requeue_overdue(deliveries.store, deliveries.queue, deliveries.clock(), WEBHOOK_GRACE)
