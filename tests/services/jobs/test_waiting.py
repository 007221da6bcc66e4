"""JobWaiter and RedisJobNotifier against a real Redis and a real SQL job store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis

from infra.localstack.servers import free_port, start_redis
from services.db import make_engine
from services.jobs.notify import RedisJobNotifier, job_channel, job_id_from_channel
from services.jobs.store import SqlJobStore
from services.jobs.types import Job
from services.jobs.waiting import JobWaiter
from services.types import JobStatus
from tests.support.jobs import insert_job, run_to
from tests.support.keys import new_key
from tests.support.stores import sql_job_store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[SqlJobStore]:
    engine = make_engine(sqlite_url)
    yield sql_job_store(engine)
    engine.dispose()


@pytest.fixture
def owner(store: SqlJobStore) -> str:
    return new_key(store._engine, "owner", at=T0).id


@pytest.fixture
def notifier(broker_url: str) -> Iterator[RedisJobNotifier]:
    n = RedisJobNotifier(broker_url)
    yield n
    n.close()


@pytest.fixture
def make_waiter() -> Iterator[Callable[..., JobWaiter]]:
    made: list[JobWaiter] = []

    def make(url: str, max_waiters: int = 8, poll_interval: float = 0.5) -> JobWaiter:
        waiter = JobWaiter(url, max_waiters, poll_interval=poll_interval)
        made.append(waiter)
        return waiter

    yield make
    for waiter in made:
        waiter.close()


def _finish(store: SqlJobStore, job_id: str) -> Job:
    return run_to(store, job_id, "succeeded", T0, prompt=3, completion=1, text="ok")


def _later(delay: float, action: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), action()))
    thread.start()
    return thread


def _wait(waiter: JobWaiter, store: SqlJobStore, job_id: str, timeout: float) -> Job:
    slot = waiter.acquire()
    assert slot is not None
    with slot:
        return slot.wait(job_id, lambda: store.get(job_id), timeout)


def test_notifier_publishes_the_change_on_the_job_channel(store, owner, notifier, broker_url):
    job = insert_job(store, owner, T0, job_id="job_pub", images=0)
    client = redis.Redis.from_url(broker_url)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(job_channel(job.id))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        notifier.job_changed(job)
        message = pubsub.get_message(timeout=5)
        assert message["channel"] == b"loupe:job:job_pub"
        assert json.loads(message["data"]) == {"id": "job_pub", "status": "queued"}
    finally:
        pubsub.close()
        client.close()


def test_notifier_never_raises_when_redis_is_down(store, owner, caplog):
    notifier = RedisJobNotifier(f"redis://127.0.0.1:{free_port()}/0")
    try:
        notifier.job_changed(insert_job(store, owner, T0, job_id="job_down", images=0))
    finally:
        notifier.close()
    assert "change not published" in caplog.text


def test_job_channel_round_trips_and_rejects_other_channels():
    assert job_id_from_channel(job_channel("job_x")) == "job_x"
    assert job_id_from_channel("loupe:job:") is None
    assert job_id_from_channel("other:job_x") is None


def test_waiter_returns_a_terminal_job_at_once(store, owner, make_waiter, broker_url):
    insert_job(store, owner, T0, job_id="job_done", images=0)
    _finish(store, "job_done")
    waiter = make_waiter(broker_url)
    started = time.monotonic()
    assert _wait(waiter, store, "job_done", 30).status is JobStatus.SUCCEEDED
    assert time.monotonic() - started < 1


def test_waiter_wakes_on_the_notification(store, owner, notifier, make_waiter, broker_url):
    insert_job(store, owner, T0, job_id="job_wake", images=0)
    # A poll interval far beyond the test: only the notification can wake the waiter in time.
    waiter = make_waiter(broker_url, poll_interval=60)
    assert waiter.start(timeout=10)
    published: list[float] = []

    def finish() -> None:
        notifier.job_changed(_finish(store, "job_wake"))
        published.append(time.monotonic())

    thread = _later(0.3, finish)
    job = _wait(waiter, store, "job_wake", 30)
    returned = time.monotonic()
    thread.join()
    assert job.status is JobStatus.SUCCEEDED
    assert returned - published[0] < 0.5
    assert waiter.waiting == 0


def test_waiter_returns_the_current_state_at_the_deadline(store, owner, make_waiter, broker_url):
    insert_job(store, owner, T0, job_id="job_slow", images=0)
    waiter = make_waiter(broker_url)
    started = time.monotonic()
    job = _wait(waiter, store, "job_slow", 0.6)
    assert job.status is JobStatus.QUEUED
    assert 0.6 <= time.monotonic() - started < 5


def test_waiter_rereads_after_registering(store, owner, make_waiter, broker_url):
    """A change committed between the first read and the registration (so never delivered to
    this waiter) is still seen at once: the waiter re-reads after registering."""
    insert_job(store, owner, T0, job_id="job_race", images=0)
    waiter = make_waiter(broker_url, poll_interval=60)
    assert waiter.start(timeout=10)
    reads = 0

    def load() -> Job:
        nonlocal reads
        reads += 1
        job = store.get("job_race")
        if reads == 1:
            _finish(store, "job_race")  # finishes right after our read, and nobody publishes
        return job

    slot = waiter.acquire()
    assert slot is not None
    started = time.monotonic()
    with slot:
        job = slot.wait("job_race", load, 30)
    assert job.status is JobStatus.SUCCEEDED
    assert time.monotonic() - started < 1


def test_waiter_polls_the_store_when_redis_is_down(store, owner, make_waiter):
    insert_job(store, owner, T0, job_id="job_poll", images=0)
    waiter = make_waiter(f"redis://127.0.0.1:{free_port()}/0", poll_interval=0.2)
    assert not waiter.start(timeout=1)
    thread = _later(0.3, lambda: _finish(store, "job_poll"))  # no notification at all
    started = time.monotonic()
    job = _wait(waiter, store, "job_poll", 30)
    thread.join()
    assert job.status is JobStatus.SUCCEEDED
    assert time.monotonic() - started < 3
    assert not waiter.live


def test_waiter_switches_to_polling_when_redis_dies_mid_wait(store, owner, make_waiter, tmp_path):
    server = start_redis(tmp_path / "redis")
    try:
        insert_job(store, owner, T0, job_id="job_died", images=0)
        waiter = make_waiter(server.url, poll_interval=0.2)
        assert waiter.start(timeout=10)
        _later(0.3, server.stop)
        _later(1.5, lambda: _finish(store, "job_died"))  # committed while Redis is gone
        started = time.monotonic()
        job = _wait(waiter, store, "job_died", 30)
        assert job.status is JobStatus.SUCCEEDED
        assert time.monotonic() - started < 5
        assert not waiter.live
    finally:
        server.stop()


def test_waiter_caps_concurrent_waiters(broker_url, make_waiter):
    waiter = make_waiter(broker_url, max_waiters=2)
    first, second = waiter.acquire(), waiter.acquire()
    assert first is not None and second is not None
    assert waiter.acquire() is None
    assert waiter.waiting == 2
    first.release()
    first.release()  # idempotent
    third = waiter.acquire()
    assert third is not None
    third.release()
    second.release()
    assert waiter.waiting == 0
