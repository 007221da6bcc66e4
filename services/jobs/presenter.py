"""The public JSON shape of a job (the polling body; webhooks will send the same)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.jobs.models import Job, JobStatus
from services.usage.pricing import price_job


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def job_to_public(job: Job) -> dict[str, Any]:
    output = None
    if job.status is JobStatus.SUCCEEDED:
        output = {"text": job.output_text, "finish_reason": job.finish_reason}
    usage = None
    if job.prompt_tokens is not None and job.completion_tokens is not None:
        usage = {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "total_tokens": job.prompt_tokens + job.completion_tokens,
            "images": len(job.images),
            "cost": price_job(
                job.price, job.prompt_tokens, job.completion_tokens, len(job.images)
            ).to_json(),
        }
    run_seconds = _seconds(job.started_at, job.completed_at)
    tokens_per_second = None
    if run_seconds and job.completion_tokens:
        tokens_per_second = round(job.completion_tokens / run_seconds, 2)
    error = None
    if job.error_code is not None:
        error = {"code": job.error_code, "message": job.error_message}
    return {
        "id": job.id,
        "object": "job",
        "status": job.status.value,
        "model": job.model,
        "created_at": _ts(job.created_at),
        "started_at": _ts(job.started_at),
        "completed_at": _ts(job.completed_at),
        "output": output,
        "usage": usage,
        "metrics": {
            "queue_seconds": _seconds(job.created_at, job.started_at),
            "run_seconds": run_seconds,
            "tokens_per_second": tokens_per_second,
        },
        "error": error,
        "cancel_requested": job.cancel_requested_at is not None,
        "metadata": job.metadata,
    }
