"""JobRetrier over real SQL (SQLite and PostgreSQL), the real quota gate (Redis) and the real
ledger; the dispatcher nudge and job events are fakes of our Protocols, to see what was handed
on and announced."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis
from sqlalchemy import select

from services.catalog.registry import build_registry
from services.db import make_engine
from services.db.schema import usage_ledger
from services.errors import Conflict, NotFound, PaymentRequired, QuotaExceeded
from services.jobs.retry import RETENTION_MARGIN, JobRetrier
from services.settings import Settings
from services.types import JobStatus, Priority
from services.usage.quotas import QuotaEnforcer, SqlQuotaStore
from tests.support.dispatch import RecordingNudge
from tests.support.jobs import insert_job, run_to
from tests.support.keys import new_key
from tests.support.stores import sql_job_store

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=30)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def job_changed(self, job) -> None:
        self.seen.append((job.id, job.status.value))


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(database_url) -> Iterator:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(db):
    return sql_job_store(db)


@pytest.fixture
def owner(db) -> str:
    return new_key(db, "owner", at=T0).id


@pytest.fixture
def nudge() -> RecordingNudge:
    return RecordingNudge()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def retrier(db, store, nudge, events, clock, broker_url) -> Iterator[JobRetrier]:
    client = redis.Redis.from_url(broker_url)
    yield JobRetrier(
        store=store, nudge=nudge, registry=build_registry(Settings()),
        quotas=QuotaEnforcer(engine=db, redis_client=client, clock=clock),
        events=events, clock=clock, retention=RETENTION,
    )  # fmt: skip
    client.close()


def _failed(store, owner, job_id="job_1", **build):
    insert_job(store, owner, T0, job_id=job_id, **build)
    return run_to(store, job_id, "failed", T0 + timedelta(seconds=5))


def test_retry_queues_hands_on_and_announces_the_job(retrier, store, owner, nudge, events):
    failed = _failed(store, owner, priority=Priority.HIGH)
    retried = retrier.retry("job_1", owner)
    assert retried == store.get("job_1")
    assert (retried.status, retried.retried_from_status) == (JobStatus.QUEUED, JobStatus.FAILED)
    assert retried.attempts == failed.attempts
    assert nudge.queues == ["inference"]  # the dispatcher hands it to the broker
    assert events.seen == [("job_1", "queued")]  # long-polls and streams see it queued


def test_retry_of_another_keys_job_is_not_found(retrier, store, owner, db, nudge):
    _failed(store, owner)
    other = new_key(db, "other", at=T0).id
    with pytest.raises(NotFound):
        retrier.retry("job_1", other)
    with pytest.raises(NotFound):
        retrier.retry("job_nope", owner)
    assert store.get("job_1").status is JobStatus.FAILED and nudge.queues == []


@pytest.mark.parametrize(
    ("outcome", "code"),
    [("succeeded", "job_not_retryable"), ("queued", "job_not_finished"),
     ("running", "job_not_finished")],
)  # fmt: skip
def test_retry_of_a_succeeded_or_active_job_is_409(retrier, store, owner, nudge, outcome, code):
    insert_job(store, owner, T0, job_id="job_1")
    before = run_to(store, "job_1", outcome, T0)
    with pytest.raises(Conflict) as info:
        retrier.retry("job_1", owner)
    assert info.value.code == code
    assert store.get("job_1") == before and nudge.queues == []


def test_retry_of_a_job_whose_data_is_removed_or_due_is_409(retrier, store, owner, clock):
    _failed(store, owner, job_id="job_gone")
    store.remove_data("job_gone", T0 + timedelta(minutes=1))
    _failed(store, owner, job_id="job_due")
    for job_id, now in [
        ("job_gone", clock.now),
        ("job_due", T0 + timedelta(seconds=6) + RETENTION - RETENTION_MARGIN),
    ]:
        clock.now = now
        with pytest.raises(Conflict) as info:
            retrier.retry(job_id, owner)
        assert info.value.code == "job_data_removed"
        assert store.get(job_id).status is JobStatus.FAILED
    clock.now -= timedelta(seconds=1)  # the retention period less the margin: still kept
    assert retrier.retry("job_due", owner).status is JobStatus.QUEUED


def test_retry_of_a_job_whose_model_is_not_served_is_409(retrier, store, owner):
    _failed(store, owner, model="a-model-since-removed")
    with pytest.raises(Conflict) as info:
        retrier.retry("job_1", owner)
    assert info.value.code == "model_not_served"


def test_retry_passes_the_queued_jobs_limit_of_a_submit(retrier, store, owner, db):
    _failed(store, owner)
    insert_job(store, owner, T0, job_id="job_waiting")
    SqlQuotaStore(db).update(owner, T0, max_queued=1)
    with pytest.raises(QuotaExceeded) as info:
        retrier.retry("job_1", owner)
    assert info.value.code == "too_many_queued_jobs"
    assert store.get("job_1").status is JobStatus.FAILED


def test_retry_reserves_the_jobs_estimated_maximum_under_the_spend_cap(retrier, store, owner, db):
    _failed(store, owner, job_id="job_big", estimated_cost_max=Decimal("2"))
    _failed(store, owner, job_id="job_small", estimated_cost_max=Decimal("0.5"))
    SqlQuotaStore(db).update(owner, T0, monthly_spend_usd=Decimal("1"))
    with pytest.raises(PaymentRequired):
        retrier.retry("job_big", owner)
    assert store.get("job_big").status is JobStatus.FAILED
    assert retrier.retry("job_small", owner).status is JobStatus.QUEUED


def test_retry_counts_against_the_keys_rate_limit_but_an_admins_does_not(retrier, store, owner, db):
    for job_id in ("job_a", "job_b", "job_c"):
        _failed(store, owner, job_id=job_id)
    SqlQuotaStore(db).update(owner, T0, requests_per_minute=1)
    assert retrier.retry("job_a", owner).status is JobStatus.QUEUED
    with pytest.raises(QuotaExceeded) as info:
        retrier.retry("job_b", owner)
    assert info.value.code == "rate_limited"
    assert retrier.retry_as_admin("job_c").status is JobStatus.QUEUED


def test_admin_retry_keeps_the_owners_queued_limit(retrier, store, owner, db):
    _failed(store, owner)
    insert_job(store, owner, T0, job_id="job_waiting")
    SqlQuotaStore(db).update(owner, T0, max_queued=1)
    with pytest.raises(QuotaExceeded):
        retrier.retry_as_admin("job_1")
    with pytest.raises(NotFound):
        retrier.retry_as_admin("job_nope")


def test_retry_bills_each_attempt_that_did_work_once(retrier, store, owner, db, clock):
    _failed(store, owner)  # billed: the engine reported its tokens (LOUPE_CHARGE_FAILED_JOBS)
    retrier.retry("job_1", owner)
    run_to(store, "job_1", "succeeded", clock.now, prompt=100, completion=10)
    with db.connect() as conn:
        rows = conn.execute(
            select(usage_ledger.c.attempt, usage_ledger.c.status).order_by(usage_ledger.c.attempt)
        ).all()
    assert [tuple(r) for r in rows] == [(1, "failed"), (2, "succeeded")]
    assert store.get("job_1").billed is True
