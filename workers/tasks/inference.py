"""Thin task shell: take the job id, hand it to the pipeline, retry transient failures."""

from __future__ import annotations

import sys
from typing import Any

from celery import Task, shared_task

from services.jobs.queue import INFERENCE_TASK
from workers.heartbeat import IN_FLIGHT
from workers.pipeline import NotServedHere, RetryLater, give_up, process_job
from workers.roots import roots_of

MISROUTED_RETRY_SECONDS = 30


@shared_task(name=INFERENCE_TASK, bind=True, max_retries=8, acks_late=True)
def run_inference(self: Task[Any, Any], job_id: str) -> str:
    ctx = roots_of(self.app).inference()
    try:
        with IN_FLIGHT.track():  # slots_in_use in this worker's heartbeat
            outcome = process_job(job_id, ctx)
        ctx.nudge.nudge((self.request.delivery_info or {}).get("routing_key") or "")
        return outcome.value
    except NotServedHere as exc:
        # Misrouted (a -Q that LOUPE_MODEL_QUEUES does not send this worker's models to): the
        # job stays queued, and its message goes round until a worker that serves the model
        # takes it, or its ttl_seconds run out. No retry budget applies: it is not a failure.
        raise self.retry(
            exc=exc, countdown=MISROUTED_RETRY_SECONDS, max_retries=sys.maxsize
        ) from exc
    except RetryLater as exc:
        if self.request.retries >= (self.max_retries or 0):
            message = f"Gave up after {self.request.retries} retries: {exc}"
            return give_up(job_id, ctx, message).value
        countdown = min(300, 2 ** (self.request.retries + 1))
        raise self.retry(exc=exc, countdown=countdown) from exc
