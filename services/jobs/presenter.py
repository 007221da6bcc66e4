"""The public JSON shape of a job (the polling body; webhooks will send the same)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from services.clock import timestamp
from services.jobs.types import Job, QueueInfo
from services.types import JobStatus
from services.usage.pricing import Cost, money_str, price_job

# What a Python exception looks like in text: "ModuleNotFoundError: No module named 'vllm'",
# a traceback, a source file. Worker messages that carry one were written for operators.
_INTERNALS = re.compile(
    r"Traceback \(most recent call last\)|\b[A-Z]\w*(?:Error|Exception)\b|No module named"
    r"|\bFile \"[^\"]+\.py\""
)


def public_error_message(code: str, message: str | None) -> str:
    """``message`` as a client may see it: a message that names exceptions, modules or source
    files (an engine that failed to load) becomes a plain sentence; the worker logged the rest."""
    if message and not _INTERNALS.search(message):
        return message
    return f"The job failed on the server ({code}); the operators have the details in its logs."


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def job_to_public(job: Job, queue: QueueInfo | None = None) -> dict[str, Any]:
    """The job as clients see it; ``queue`` (for a queued job) adds its place in line."""
    output = None
    if job.status is JobStatus.SUCCEEDED and job.data_removed_at is None:
        output = {"text": job.output_text, "finish_reason": job.finish_reason}
    usage = None
    if job.prompt_tokens is not None and job.completion_tokens is not None:
        usage = {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "total_tokens": job.prompt_tokens + job.completion_tokens,
            "images": len(job.images),
            "cost": _cost(job).to_public(),
        }
    run_seconds = _seconds(job.started_at, job.completed_at)
    tokens_per_second = None
    if run_seconds and job.completion_tokens:
        tokens_per_second = round(job.completion_tokens / run_seconds, 2)
    error = None
    if job.error_code is not None:
        error = {
            "code": job.error_code,
            "message": public_error_message(job.error_code, job.error_message),
        }
    return {
        "id": job.id,
        "object": "job",
        "status": job.status.value,
        "model": job.model,
        "priority": job.priority.value,
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "completed_at": timestamp(job.completed_at),
        "output": output,
        "usage": usage,
        "metrics": {
            "queue_seconds": _queue_seconds(job),
            "run_seconds": run_seconds,
            "tokens_per_second": tokens_per_second,
        },
        "error": error,
        "attempts": job.attempts,
        "retried_from_status": job.retried_from_status and job.retried_from_status.value,
        "cancel_requested": job.cancel_requested_at is not None,
        "expires_at": timestamp(job.expires_at),
        "queue_position": None if queue is None else queue.position,
        "estimated_start_seconds": None if queue is None else queue.estimated_start_seconds,
        "data_removed": job.data_removed_at is not None,
        "metadata": job.metadata,
        "webhook": job.webhook_url,
        "webhook_events_filter": list(job.webhook_events),
        "estimated_cost": _estimate(job),
    }


def _queue_seconds(job: Job) -> float | None:
    """Time spent queued, over every attempt (never a dead worker's run time); rows from before
    migration 0009 have none stored: their start minus their submit."""
    if job.started_at is None:
        return None
    if job.queue_seconds is not None:
        return round(job.queue_seconds, 3)
    return _seconds(job.created_at, job.started_at)


def _cost(job: Job) -> Cost:
    """What the job is charged: the ledger's numbers (zero when the job has no ledger row)."""
    if job.billed is False:
        return Cost.zero(job.price.currency)
    return price_job(job.price, job.prompt_tokens or 0, job.completion_tokens or 0, len(job.images))


def _estimate(job: Job) -> dict[str, Any] | None:
    """The up-front maximum made at submit (kept on the job, so every status shows it)."""
    if job.estimated_cost_max is None:
        return None
    return {
        "max": money_str(job.estimated_cost_max),
        "currency": job.price.currency,
        "prompt_tokens_max": job.estimated_prompt_tokens,
        "max_tokens": job.params.max_tokens,
        "images": len(job.images),
    }
