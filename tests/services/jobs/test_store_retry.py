"""SqlJobStore.retry on SQLite and PostgreSQL: a compare-and-set from a failed,
expired or canceled job back to queued, under the same id, with the old run's fences shut."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.db import make_engine
from services.types import JobStatus
from tests.support.jobs import LEASE, insert_job, run_to
from tests.support.keys import new_key
from tests.support.stores import sql_job_store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
RETRYABLE_ENDS = {
    "failed": JobStatus.FAILED,
    "failed_before_engine": JobStatus.FAILED,
    "canceled_running": JobStatus.CANCELED,
    "canceled_queued": JobStatus.CANCELED,
    "expired": JobStatus.EXPIRED,
}


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(db):
    return sql_job_store(db)


@pytest.fixture
def owner(db):
    return new_key(db, "owner", at=T0).id


def _ended(store, owner, outcome, job_id="job_1", **build):
    insert_job(store, owner, T0, job_id=job_id, **build)
    return run_to(store, job_id, outcome, T0 + timedelta(seconds=5))


@pytest.mark.parametrize("outcome", sorted(RETRYABLE_ENDS))
def test_retry_queues_the_job_again_without_its_run(store, owner, outcome):
    ended = _ended(store, owner, outcome)
    retried = store.retry("job_1", T1)
    assert retried is not None and retried == store.get("job_1")
    assert retried.status is JobStatus.QUEUED
    assert retried.retried_from_status is RETRYABLE_ENDS[outcome]
    assert retried.attempts == ended.attempts  # the next claim makes the new attempt
    assert (retried.id, retried.created_at, retried.messages) == (
        ended.id, ended.created_at, ended.messages,
    )  # fmt: skip
    cleared = (
        retried.started_at, retried.completed_at, retried.cancel_requested_at,
        retried.error_code, retried.error_message, retried.output_text, retried.finish_reason,
        retried.prompt_tokens, retried.completion_tokens, retried.billed,
    )  # fmt: skip
    assert cleared == (None,) * len(cleared)
    claimed = store.claim("job_1", T1 + timedelta(seconds=2), LEASE)
    assert claimed is not None and claimed.attempts == ended.attempts + 1
    assert claimed.retried_from_status is RETRYABLE_ENDS[outcome]


@pytest.mark.parametrize("outcome", ["succeeded", "queued", "running"])
def test_retry_refuses_a_succeeded_or_active_job(store, owner, outcome):
    before = _ended(store, owner, outcome)
    assert store.retry("job_1", T1) is None
    assert store.get("job_1") == before


def test_retry_keeps_the_old_runs_fence_shut(store, owner):
    running = _ended(store, owner, "running")
    assert store.fail("job_1", running.attempts, T0, code="engine_error", message="m")
    assert store.retry("job_1", T1) is not None
    late = {"text": "late", "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1}
    assert not store.succeed("job_1", running.attempts, T1, **late)  # the first run's late finish
    again = store.claim("job_1", T1, LEASE)
    assert not store.succeed("job_1", running.attempts, T1, **late)  # still not its attempt
    assert store.succeed("job_1", again.attempts, T1, **late)
    assert store.get("job_1").status is JobStatus.SUCCEEDED


def test_retry_twice_at_once_queues_the_job_once(store, owner):
    _ended(store, owner, "failed")
    assert store.retry("job_1", T1) is not None
    assert store.retry("job_1", T1 + timedelta(seconds=1)) is None
    assert store.get("job_1").status is JobStatus.QUEUED


def test_retry_gives_a_new_deadline_from_the_jobs_ttl_each_time(store, owner):
    insert_job(store, owner, T0, job_id="job_t", expires_at=T0 + timedelta(seconds=30))
    assert store.expire_queued("job_t", T0 + timedelta(seconds=31))
    first = store.retry("job_t", T1)
    assert first is not None and first.expires_at == T1 + timedelta(seconds=30)
    assert store.claim("job_t", T1 + timedelta(seconds=31), LEASE) is None  # past the new one
    assert store.expire_queued("job_t", T1 + timedelta(seconds=31))
    later = T1 + timedelta(hours=2)
    second = store.retry("job_t", later)
    assert second is not None and second.expires_at == later + timedelta(seconds=30)
    assert store.claim("job_t", later + timedelta(seconds=29), LEASE) is not None


def test_retry_of_a_job_without_ttl_sets_no_deadline(store, owner):
    _ended(store, owner, "failed")
    assert store.retry("job_1", T1).expires_at is None


def test_retry_starts_the_lost_attempt_count_again(store, owner):
    insert_job(store, owner, T0, job_id="job_1")
    now = T0
    for _ in range(2):
        store.claim("job_1", now, LEASE)
        now += LEASE + timedelta(seconds=1)
        store.reclaim_lapsed("job_1", now, 2)
    lost = store.get("job_1")
    assert (lost.status, lost.error_code, lost.lost_attempts) == (
        JobStatus.FAILED,
        "worker_lost",
        2,
    )
    retried = store.retry("job_1", now)
    assert retried.lost_attempts == 0 and retried.attempts == 2


def test_retry_refuses_a_job_whose_data_is_removed_or_due_for_removal(store, owner):
    _ended(store, owner, "failed", job_id="job_gone")
    assert store.remove_data("job_gone", T1)
    assert store.retry("job_gone", T1) is None
    _ended(store, owner, "failed", job_id="job_due")
    assert store.retry("job_due", T1, finished_after=T1 - timedelta(minutes=1)) is None
    assert store.get("job_due").status is JobStatus.FAILED
    assert store.retry("job_due", T1, finished_after=T0) is not None
