"""Thin task shell: take the job id, hand it to the pipeline, retry transient failures."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from services.jobs.queue import INFERENCE_TASK
from workers.context import get_worker_context
from workers.heartbeat import IN_FLIGHT
from workers.pipeline import RetryLater, give_up, process_job


@shared_task(name=INFERENCE_TASK, bind=True, max_retries=8, acks_late=True)
def run_inference(self: Task[Any, Any], job_id: str) -> str:
    ctx = get_worker_context(self.app.conf.loupe_settings)
    try:
        with IN_FLIGHT.track():  # slots_in_use in this worker's heartbeat
            return process_job(job_id, ctx).value
    except RetryLater as exc:
        if self.request.retries >= (self.max_retries or 0):
            message = f"Gave up after {self.request.retries} retries: {exc}"
            return give_up(job_id, ctx, message).value
        countdown = min(300, 2 ** (self.request.retries + 1))
        raise self.retry(exc=exc, countdown=countdown) from exc
