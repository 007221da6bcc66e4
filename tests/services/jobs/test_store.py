"""SqlJobStore on SQLite and PostgreSQL: compare-and-set transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.db import make_engine
from services.errors import NotFound
from services.jobs.types import NewJob
from services.types import JobStatus, SamplingParams
from tests.support.images import image_ref
from tests.support.jobs import new_job
from tests.support.keys import new_key
from tests.support.stores import sql_job_store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


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


def _new_job(owner: str, job_id: str = "job_1", **changes) -> NewJob:
    fields = {
        "images": (image_ref("ab"),),
        "params": SamplingParams(max_tokens=8, stop=("x",), seed=3),
        "metadata": {"k": "v"},
    }
    return new_job(owner, job_id, **(fields | changes))


def test_store_insert_then_get_round_trips(store, owner):
    created = store.insert(_new_job(owner), T0)
    assert created.status is JobStatus.QUEUED
    assert created.created_at == T0
    assert created.params == SamplingParams(max_tokens=8, stop=("x",), seed=3)
    assert created.messages[0].content[1].text == "hi"
    assert created.images[0].key.endswith("ab" * 32)
    assert created.metadata == {"k": "v"}
    assert store.get("job_1") == created


def test_store_get_for_other_owner_is_not_found(store, owner):
    store.insert(_new_job(owner), T0)
    with pytest.raises(NotFound):
        store.get_for_owner("job_1", "key_someone_else")
    assert store.get_for_owner("job_1", owner).id == "job_1"


def test_store_claim_is_compare_and_set(store, owner):
    store.insert(_new_job(owner), T0)
    first = store.claim("job_1", T0, LEASE)
    assert first is not None
    assert first.status is JobStatus.RUNNING
    assert first.attempts == 1
    assert store.claim("job_1", T0 + timedelta(seconds=1), LEASE) is None


def test_store_lapsed_lease_is_queued_again_and_fences_off_the_first_holder(store, owner):
    store.insert(_new_job(owner), T0)
    first = store.claim("job_1", T0, LEASE)
    assert store.claim("job_1", T0 + LEASE + timedelta(seconds=1), LEASE) is None  # running
    assert store.reclaim_lapsed("job_1", T0 + LEASE, 3) is None  # not lapsed yet
    assert store.reclaim_lapsed("job_1", T0 + LEASE + timedelta(seconds=1), 3) is JobStatus.QUEUED
    second = store.claim("job_1", T0 + LEASE + timedelta(seconds=1), LEASE)
    assert second is not None and second.lost_attempts == 1
    assert second.attempts == 2
    # The first holder is fenced off: its late result is refused.
    assert not store.succeed(
        "job_1", first.attempts, T0, text="late", finish_reason="stop",
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    assert store.succeed(
        "job_1", second.attempts, T0 + LEASE * 2, text="ok", finish_reason="stop",
        prompt_tokens=5, completion_tokens=2,
    )  # fmt: skip
    done = store.get("job_1")
    assert done.status is JobStatus.SUCCEEDED
    assert (done.output_text, done.prompt_tokens, done.completion_tokens) == ("ok", 5, 2)


def test_store_finished_job_cannot_be_claimed_or_finished_again(store, owner):
    store.insert(_new_job(owner), T0)
    job = store.claim("job_1", T0, LEASE)
    assert store.fail("job_1", job.attempts, T0, code="engine_error", message="boom")
    assert store.claim("job_1", T0 + timedelta(days=1), LEASE) is None
    assert not store.succeed(
        "job_1", job.attempts, T0, text="x", finish_reason="stop",
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    failed = store.get("job_1")
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == "engine_error"


def test_store_release_requeues_for_retry(store, owner):
    store.insert(_new_job(owner), T0)
    job = store.claim("job_1", T0, LEASE)
    assert store.release("job_1", job.attempts, T0)
    assert store.get("job_1").status is JobStatus.QUEUED
    assert store.claim("job_1", T0, LEASE).attempts == 2


def test_store_delete_queued_only_deletes_queued(store, owner):
    store.insert(_new_job(owner), T0)
    store.insert(_new_job(owner, "job_2"), T0)
    store.claim("job_2", T0, LEASE)
    assert store.delete_queued("job_1")
    assert not store.delete_queued("job_2")
    with pytest.raises(NotFound):
        store.get("job_1")


def test_store_timestamps_are_utc_aware(store, owner):
    store.insert(_new_job(owner), T0)
    job = store.claim("job_1", T0 + timedelta(seconds=2), LEASE)
    assert job.started_at == T0 + timedelta(seconds=2)
    assert job.started_at.tzinfo is not None


# --- lifecycle controls: TTL, idempotency keys, listing, queue position, retention -------------


def _insert(store, owner, job_id, at, **changes):
    return store.insert(_new_job(owner, job_id, **changes), at)


def test_store_expire_queued_only_after_deadline(store, owner):
    _insert(store, owner, "job_t", T0, expires_at=T0 + timedelta(seconds=10))
    assert not store.expire_queued("job_t", T0 + timedelta(seconds=9))
    assert store.claim("job_t", T0 + timedelta(seconds=11), LEASE) is None  # never claimed late
    assert store.overdue_queued(T0 + timedelta(seconds=11), 10) == ["job_t"]
    assert store.expire_queued("job_t", T0 + timedelta(seconds=11))
    job = store.get("job_t")
    assert job.status is JobStatus.EXPIRED and job.started_at is None
    assert job.error_code == "expired" and job.prompt_tokens is None
    assert store.overdue_queued(T0 + timedelta(seconds=11), 10) == []


def test_store_claim_before_deadline_wins_over_expiry(store, owner):
    _insert(store, owner, "job_t", T0, expires_at=T0 + timedelta(seconds=10))
    assert store.claim("job_t", T0 + timedelta(seconds=5), LEASE) is not None
    assert not store.expire_queued("job_t", T0 + timedelta(seconds=11))


def test_store_idempotency_key_is_unique_per_owner(store, owner, db):
    from services.errors import Conflict

    other = new_key(db, "other", at=T0).id
    _insert(store, owner, "job_a", T0, idempotency_key="k1", request_hash="h")
    _insert(store, other, "job_b", T0, idempotency_key="k1", request_hash="h")  # other key: fine
    with pytest.raises(Conflict) as info:
        _insert(store, owner, "job_c", T0, idempotency_key="k1", request_hash="h")
    assert info.value.code == "idempotency_key_in_use"
    assert store.find_idempotent(owner, "k1").id == "job_a"
    assert store.request_hash("job_a") == "h"
    store.forget_idempotency_key("job_a")
    assert store.find_idempotent(owner, "k1") is None
    _insert(store, owner, "job_c", T0, idempotency_key="k1", request_hash="h2")


def test_store_list_filters_and_pages_newest_first(store, owner, db):
    from services.jobs.store import Cursor, JobFilter

    other = new_key(db, "other", at=T0).id
    for i in range(7):
        _insert(
            store, owner, f"job_{i}", T0 + timedelta(seconds=i),
            metadata={"customer": "acme" if i % 2 else "globex", "n": str(i)},
        )  # fmt: skip
    _insert(store, other, "job_x", T0)
    store.claim("job_6", T0, LEASE)

    everything = store.list_for_owner(owner, JobFilter(), 100, None)
    assert [j.id for j in everything] == [f"job_{i}" for i in range(6, -1, -1)]

    first = store.list_for_owner(owner, JobFilter(), 3, None)
    cursor = Cursor(first[-1].created_at, first[-1].id)
    second = store.list_for_owner(owner, JobFilter(), 3, cursor)
    assert [j.id for j in first + second] == [f"job_{i}" for i in range(6, 0, -1)]

    running = store.list_for_owner(owner, JobFilter(statuses=(JobStatus.RUNNING,)), 10, None)
    assert [j.id for j in running] == ["job_6"]
    acme = store.list_for_owner(owner, JobFilter(metadata={"customer": "acme"}), 10, None)
    assert [j.id for j in acme] == ["job_5", "job_3", "job_1"]
    window = JobFilter(created_after=T0 + timedelta(seconds=2), created_before=T0 + timedelta(4))
    assert [j.id for j in store.list_for_owner(owner, window, 10, None)][-1] == "job_2"
    assert store.list_for_owner(owner, JobFilter(model="other-model"), 10, None) == []


def test_store_queued_ahead_counts_priority_then_age(store, owner):
    from services.types import Priority

    _insert(store, owner, "low_1", T0, priority=Priority.LOW)
    _insert(store, owner, "norm_1", T0 + timedelta(seconds=1))
    _insert(store, owner, "high_1", T0 + timedelta(seconds=2), priority=Priority.HIGH)
    _insert(store, owner, "norm_2", T0 + timedelta(seconds=3))
    assert store.queued_ahead(store.get("high_1")) == 0
    assert store.queued_ahead(store.get("norm_1")) == 1
    assert store.queued_ahead(store.get("norm_2")) == 2
    assert store.queued_ahead(store.get("low_1")) == 3


def test_store_retention_clears_data_but_keeps_usage(store, owner):
    _insert(store, owner, "job_old", T0)
    job = store.claim("job_old", T0, LEASE)
    store.succeed("job_old", job.attempts, T0, text="hi", finish_reason="stop",
                  prompt_tokens=5, completion_tokens=2)  # fmt: skip
    _insert(store, owner, "job_new", T0)
    assert [j.id for j in store.retention_due(T0 + timedelta(days=1), 10)] == ["job_old"]
    key = _new_job(owner).images[0].key
    assert store.image_in_use(key, ["job_old"])  # job_new (queued) keeps the same image
    assert store.remove_data("job_old", T0 + timedelta(days=1))
    assert not store.remove_data("job_old", T0 + timedelta(days=1))
    gone = store.get("job_old")
    assert gone.output_text is None and gone.messages == () and gone.data_removed_at is not None
    assert gone.prompt_tokens == 5 and gone.completion_tokens == 2 and len(gone.images) == 1
    assert store.retention_due(T0 + timedelta(days=1), 10) == []
    assert not store.remove_data("job_new", T0)  # never a job that has not finished


def test_store_renew_extends_only_leases_still_held(store, owner):
    store.insert(_new_job(owner), T0)
    store.insert(_new_job(owner, "job_2"), T0)
    first = store.claim("job_1", T0, LEASE)
    store.claim("job_2", T0, LEASE)
    renewed = store.renew([("job_1", first.attempts), ("job_2", 99)], T0 + LEASE, LEASE)
    assert renewed == {"job_1"}
    # job_1's lease now runs to T0 + 2 leases; job_2 (not renewed: not our attempt) lapsed.
    later = T0 + LEASE + timedelta(seconds=1)
    assert store.reclaim_lapsed("job_1", later, 3) is None
    assert store.reclaim_lapsed("job_2", later, 3) is JobStatus.QUEUED
    assert store.renew([("job_2", 1)], later, LEASE) == set()  # requeued: no longer held


def test_store_job_that_loses_its_worker_max_attempts_times_fails_unbilled(store, owner):
    store.insert(_new_job(owner), T0)
    now = T0
    for attempt in (1, 2, 3):
        job = store.claim("job_1", now, LEASE)
        assert job is not None and job.attempts == attempt
        now += LEASE + timedelta(seconds=1)
        expected = JobStatus.QUEUED if attempt < 3 else JobStatus.FAILED
        assert store.reclaim_lapsed("job_1", now, 3) is expected
    lost = store.get("job_1")
    assert (lost.status, lost.error_code, lost.attempts, lost.lost_attempts) == (
        JobStatus.FAILED, "worker_lost", 3, 3,
    )  # fmt: skip
    assert lost.billed is False and lost.completed_at == now
    assert store.claim("job_1", now, LEASE) is None  # never handed out again


def test_store_queue_seconds_leave_out_the_time_on_a_dead_worker(store, owner):
    store.insert(_new_job(owner), T0)
    store.claim("job_1", T0 + timedelta(seconds=2), LEASE)  # 2 s queued
    lapsed = T0 + timedelta(seconds=100)  # the worker died; the sweep finds it here
    assert store.reclaim_lapsed("job_1", lapsed, 3) is JobStatus.QUEUED
    rerun = store.claim("job_1", lapsed + timedelta(seconds=3), LEASE)  # 3 s queued again
    assert rerun is not None and rerun.queue_seconds == pytest.approx(5.0)
