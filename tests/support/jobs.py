"""Job builders: a ``NewJob`` with sensible defaults, and a job driven to a state through the
store's own transitions (as a worker, the API and the sweeps would drive it)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from services.db.schema import jobs
from services.jobs.store import SqlJobStore
from services.jobs.types import Job, NewJob
from services.types import ContentPart, ImageRef, JobStatus, Message, PriceCard, SamplingParams
from tests.support.images import image_ref

TINY_MODEL = "loupe-tiny-mllama"
LEASE = timedelta(seconds=60)
_ids = itertools.count(1)


def new_job(
    owner_id: str,
    job_id: str | None = None,
    *,
    images: int | tuple[ImageRef, ...] = 1,
    text: str = "hi",
    **fields: Any,
) -> NewJob:
    """A job to insert: the tiny model, one user message that shows each image then says
    ``text``, max_tokens 8, a free price card, a 30 s timeout. ``images``: how many (distinct
    references) or which; ``fields`` replace any other ``NewJob`` field."""
    refs = images if isinstance(images, tuple) else _refs(images)
    shown = tuple(ContentPart("image", image_index=i) for i in range(len(refs)))
    defaults: dict[str, Any] = {
        "id": job_id or f"job_t{next(_ids):06d}",
        "owner_id": owner_id,
        "model": TINY_MODEL,
        "messages": (Message("user", (*shown, ContentPart("text", text))),),
        "images": refs,
        "params": SamplingParams(max_tokens=8),
        "price": PriceCard(),
        "timeout_seconds": 30,
    }
    return NewJob(**(defaults | fields))


def _refs(count: int) -> tuple[ImageRef, ...]:
    return tuple(image_ref(f"{i:02d}") for i in range(count))


def insert_job(store: SqlJobStore, owner_id: str, at: datetime, **build: Any) -> Job:
    """Insert :func:`new_job` (``build`` is its arguments) queued at ``at``; the job as stored."""
    return store.insert(new_job(owner_id, **build), at)


# Where run_to can take a job: queued ends, and the ends of a run (started by a claim).
QUEUED_ENDS = ("canceled_queued", "expired")
RUN_ENDS = ("succeeded", "failed", "failed_before_engine", "canceled_running")


def run_to(
    store: SqlJobStore,
    job_id: str,
    outcome: str,
    now: datetime,
    *,
    prompt: int = 100,
    completion: int = 10,
    text: str = "t",
) -> Job:
    """Drive a job to ``outcome`` ("queued", "running", or one of :data:`QUEUED_ENDS` and
    :data:`RUN_ENDS`) at ``now`` and return it as stored. A run is claimed first unless the job
    already runs; ``prompt`` and ``completion`` are the engine's token counts, ``text`` its
    answer. Asserts that every transition took."""
    if outcome in QUEUED_ENDS:
        _end_queued(store, job_id, outcome, now)
    elif outcome != "queued":
        job = _held(store, job_id, now)
        if outcome != "running":
            assert _end_run(store, job, outcome, now, prompt, completion, text), outcome
    return store.get(job_id)


def _end_queued(store: SqlJobStore, job_id: str, outcome: str, now: datetime) -> None:
    if outcome == "canceled_queued":
        assert store.cancel_queued(job_id, now)
        return
    # The expiry sweep's write (queued → expired, never charged), for a job with no deadline.
    with store._engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(status=JobStatus.EXPIRED.value, completed_at=now)
        )


def _held(store: SqlJobStore, job_id: str, now: datetime) -> Job:
    """The job as its current attempt holds it: claimed at ``now`` if it is still queued."""
    job: Job | None = store.get(job_id)
    if job is not None and job.status is JobStatus.QUEUED:
        job = store.claim(job_id, now, LEASE)
    assert job is not None and job.status is JobStatus.RUNNING, job
    return job


def _end_run(
    store: SqlJobStore,
    job: Job,
    outcome: str,
    now: datetime,
    prompt: int,
    completion: int,
    text: str,
) -> bool:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    if outcome == "succeeded":
        return store.succeed(job.id, job.attempts, now, text=text, finish_reason="stop", **usage)
    if outcome == "failed":
        return store.fail(job.id, job.attempts, now, code="job_timeout", message="m", **usage)
    if outcome == "failed_before_engine":
        return store.fail(job.id, job.attempts, now, code="invalid_image", message="m")
    if outcome == "canceled_running":
        return store.cancel_running(job.id, job.attempts, now, **usage)
    raise AssertionError(f"unknown outcome {outcome!r}")
