"""process_job when a dependency is down or its lease is taken over: the job and a finished
result are kept, and the message is retried rather than dropped."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from services.db import make_engine
from services.db.schema import usage_ledger
from services.errors import Unavailable
from services.types import JobStatus
from tests.support.stores import sql_job_store
from tests.workers.test_pipeline import NOW, FakeEngine, _ctx, _queue_job, start_running
from workers.pipeline import Outcome, RetryLater, process_job


@pytest.fixture
def store(sqlite_url):
    engine = make_engine(sqlite_url)
    yield sql_job_store(engine)
    engine.dispose()


class FlakyStore:
    """The real store, whose ``method`` raises ``Unavailable`` on its first ``times`` calls."""

    def __init__(self, store: Any, method: str, times: int) -> None:
        self._store = store
        self._method = method
        self._times = times
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if name != self._method:
            return real

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if self.failures < self._times:
                self.failures += 1
                raise Unavailable("database unavailable: connection refused")
            return real(*args, **kwargs)

        return flaky


def _ledger_rows(store) -> int:
    with store._engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(usage_ledger)).scalar_one())


def test_a_database_outage_before_the_claim_retries_the_message(store):
    flaky = FlakyStore(store, "get", 1)
    ctx = _ctx(flaky, FakeEngine())
    job_id = _queue_job(store, ctx)
    with pytest.raises(RetryLater, match="database unavailable"):
        process_job(job_id, ctx)  # the task shell retries the message: never acked and lost
    assert store.get(job_id).status is JobStatus.QUEUED
    assert process_job(job_id, ctx) is Outcome.SUCCEEDED


def test_a_finished_result_is_written_once_the_database_is_back(store):
    flaky = FlakyStore(store, "succeed", 3)
    ctx = _ctx(flaky, FakeEngine())
    job_id = _queue_job(store, ctx)
    assert process_job(job_id, ctx) is Outcome.SUCCEEDED
    assert flaky.failures == 3
    job = store.get(job_id)
    assert (job.status, job.output_text, job.attempts) == (JobStatus.SUCCEEDED, "a cat", 1)
    assert _ledger_rows(store) == 1


def test_a_worker_whose_lease_was_taken_over_stops_and_writes_nothing(store):
    engine = FakeEngine(block=threading.Event())
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    runner, outcome = start_running(job_id, ctx, engine)
    # This worker was cut off past its lease: the sweep queued the job again.
    assert store.reclaim_lapsed(job_id, NOW + timedelta(seconds=31), 3) is JobStatus.QUEUED
    runner.join(10)
    ctx.leases.close()
    assert outcome == [Outcome.SKIPPED] and engine.aborted == [job_id]
    job = store.get(job_id)
    assert (job.status, job.lost_attempts, job.output_text) == (JobStatus.QUEUED, 1, None)
    assert _ledger_rows(store) == 0
