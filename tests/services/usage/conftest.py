"""Builders for usage tests: jobs with a price card, driven through the real SQL store."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update

from services.auth.keys import Role, SqlKeyStore
from services.db import make_engine
from services.db.schema import jobs, usage_ledger
from services.jobs.store import SqlJobStore
from services.jobs.types import Job, NewJob
from services.types import ContentPart, ImageRef, JobStatus, Message, PriceCard, SamplingParams

LEASE = timedelta(seconds=60)


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def new_owner(engine: Engine, name: str, now: datetime, role: Role = Role.USER) -> str:
    return SqlKeyStore(engine).create(name, role, now)[0].id


def insert_job(
    store: SqlJobStore,
    owner: str,
    job_id: str,
    now: datetime,
    price: PriceCard,
    *,
    model: str = "llama-3.2-90b-vision-instruct",
    images: int = 1,
) -> Job:
    refs = tuple(ImageRef(f"{i:02d}" * 32, "image/png", 10, 4, 3) for i in range(images))
    content = tuple(ContentPart("image", image_index=i) for i in range(images))
    return store.insert(
        NewJob(
            id=job_id,
            owner_id=owner,
            model=model,
            messages=(Message("user", (*content, ContentPart("text", "hi"))),),
            images=refs,
            params=SamplingParams(max_tokens=64),
            price=price,
            timeout_seconds=30,
        ),
        now,
    )


def run_to(
    store: SqlJobStore,
    job_id: str,
    outcome: str,
    now: datetime,
    prompt: int = 100,
    completion: int = 10,
) -> None:
    """Drive a queued job to ``outcome`` through the store's own transitions."""
    if outcome == "queued":
        return
    if outcome == "canceled_queued":
        assert store.cancel_queued(job_id, now)
        return
    if outcome == "expired":  # the lifecycle sweeper's write: queued -> expired, no usage
        with store._engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(status=JobStatus.EXPIRED.value, completed_at=now)
            )
        return
    job = store.claim(job_id, now, LEASE)
    assert job is not None
    attempt = job.attempts
    if outcome == "running":
        return
    if outcome == "succeeded":
        ok = store.succeed(
            job_id, attempt, now, text="t", finish_reason="stop",
            prompt_tokens=prompt, completion_tokens=completion,
        )  # fmt: skip
    elif outcome == "failed":
        ok = store.fail(
            job_id, attempt, now, code="job_timeout", message="m",
            prompt_tokens=prompt, completion_tokens=completion,
        )  # fmt: skip
    elif outcome == "failed_before_engine":
        ok = store.fail(job_id, attempt, now, code="invalid_image", message="m")
    elif outcome == "canceled_running":
        ok = store.cancel_running(
            job_id, attempt, now, prompt_tokens=prompt, completion_tokens=completion
        )
    else:
        raise AssertionError(outcome)
    assert ok


def ledger_rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(usage_ledger)).mappings()]
