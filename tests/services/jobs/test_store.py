"""SqlJobStore on SQLite and PostgreSQL: compare-and-set transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.auth.keys import Role, SqlKeyStore
from services.db import make_engine
from services.errors import NotFound
from services.jobs.models import (
    ContentPart,
    ImageRef,
    JobStatus,
    Message,
    NewJob,
    PriceCard,
    SamplingParams,
)
from services.jobs.store import SqlJobStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(db):
    return SqlJobStore(db)


@pytest.fixture
def owner(db):
    return SqlKeyStore(db).create("owner", Role.USER, T0)[0].id


def _new_job(owner: str, job_id: str = "job_1") -> NewJob:
    return NewJob(
        id=job_id,
        owner_id=owner,
        model="loupe-tiny-mllama",
        messages=(
            Message("user", (ContentPart("image", image_index=0), ContentPart("text", "hi"))),
        ),
        images=(ImageRef("ab" * 32, "image/png", 10, 4, 3),),
        params=SamplingParams(max_tokens=8, stop=("x",), seed=3),
        price=PriceCard(),
        timeout_seconds=30,
        metadata={"k": "v"},
    )


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


def test_store_claim_takes_over_after_lease_expires(store, owner):
    store.insert(_new_job(owner), T0)
    first = store.claim("job_1", T0, LEASE)
    second = store.claim("job_1", T0 + LEASE + timedelta(seconds=1), LEASE)
    assert second is not None
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
    assert store.release("job_1", job.attempts)
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
