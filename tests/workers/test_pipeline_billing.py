"""process_job bills a job exactly once, however often its message is delivered."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from services.catalog.registry import build_registry
from services.db import make_engine
from services.db.schema import usage_ledger
from services.settings import Settings
from services.types import ImageRef, JobStatus
from tests.support.images import make_image
from tests.support.jobs import insert_job
from tests.support.keys import new_key
from tests.support.models import LLAMA_90B
from tests.support.stores import sql_job_store
from tests.workers.test_pipeline import NOW, FakeEngine, _ctx
from workers.pipeline import Outcome, process_job

CARD_90B = build_registry(Settings()).get(LLAMA_90B).price


@pytest.fixture
def store(sqlite_url):
    engine = make_engine(sqlite_url)
    yield sql_job_store(engine)
    engine.dispose()


def _queue(store, ctx) -> str:
    owner = new_key(store._engine, "o", at=NOW).id
    job = insert_job(store, owner, NOW, job_id="job_b", price=CARD_90B)
    ref: ImageRef = job.images[0]
    ctx.blobs.put(ref.key, make_image(), ref.content_type)
    return job.id


def _ledger(store) -> list[tuple[str, object]]:
    with store._engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(select(usage_ledger.c.job_id, usage_ledger.c.cost_total))
        ]


def test_pipeline_redelivered_message_after_finish_bills_once(store):
    # The worker finished the job, then died before acking: the broker delivers it again.
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue(store, ctx)
    assert process_job(job_id, ctx) is Outcome.SUCCEEDED
    assert process_job(job_id, _ctx(store, engine, ctx.blobs)) is Outcome.SKIPPED
    # 11 prompt tokens, 3 completion tokens, one image on the 90B card.
    assert _ledger(store) == [
        (
            job_id,
            CARD_90B.input_per_million * 11 / 10**6
            + CARD_90B.output_per_million * 3 / 10**6
            + CARD_90B.per_image,
        )
    ]
    assert len(engine.calls) == 1


def test_pipeline_concurrent_duplicate_messages_bill_once(store):
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue(store, ctx)
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(process_job(job_id, ctx))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(Outcome.SUCCEEDED) == 1
    assert len(_ledger(store)) == 1


def test_pipeline_worker_killed_before_commit_is_rerun_and_billed_once(store):
    # Attempt 1 ran the model but its worker was killed before writing the result; after the
    # lease the redelivered message runs attempt 2, which bills. Attempt 1's late write loses.
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue(store, ctx)
    dead = store.claim(job_id, NOW, timedelta(seconds=90))
    later = dataclasses.replace(
        _ctx(store, engine, ctx.blobs), clock=lambda: NOW + timedelta(seconds=91)
    )
    assert process_job(job_id, later) is Outcome.SUCCEEDED
    assert not store.succeed(
        job_id, dead.attempts, NOW, text="late", finish_reason="stop",
        prompt_tokens=11, completion_tokens=3,
    )  # fmt: skip
    assert process_job(job_id, later) is Outcome.SKIPPED
    job = store.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2 and job.billed is True
    with store._engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(usage_ledger)).scalar_one() == 1
