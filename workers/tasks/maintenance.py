"""Thin periodic task shells (scheduled by Celery beat): expiry, retention (jobs and uploaded
files), and the webhook sweep that publishes due attempts. Lost jobs are the dispatcher's
(``services.dispatch``)."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from services.jobs.maintenance import expire_overdue, remove_old_data
from services.webhooks.dispatch import claim_window, dispatch_due
from workers.roots import roots_of

EXPIRE_TASK = "loupe.maintenance.expire_overdue"
RETENTION_TASK = "loupe.maintenance.remove_old_data"
WEBHOOK_SWEEP_TASK = "loupe.maintenance.dispatch_due_webhooks"


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
def dispatch_due_webhooks(self: Task[Any, Any]) -> int:
    """Publish every webhook attempt that has come due: retries are scheduled in SQL."""
    hooks = roots_of(self.app).light().deliveries
    window = claim_window(hooks.settings.webhook_timeout_seconds)
    return dispatch_due(hooks.store, hooks.queue, hooks.clock(), window)
