"""Expiry, retention and lost-message sweeps against real SQLite, S3 and Redis."""

from __future__ import annotations

import json
from datetime import timedelta

import redis

from services.clock import utcnow
from services.jobs.events import NoJobEvents
from services.jobs.maintenance import expire_overdue, remove_old_data, requeue_lost
from services.jobs.queue import UNACKED_KEY, RedisQueuedMessages, priority_queue_names
from services.types import JobStatus
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.jobs import run_to


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def job_changed(self, job) -> None:
        self.seen.append((job.id, job.status.value))


def _finish(api, job_id, at):
    run_to(api.jobs, job_id, "succeeded", at, prompt=10, completion=3, text="a cat")


def test_expire_overdue_expires_only_jobs_past_their_ttl(client, api, user_key):
    short = client.post("/v1/jobs", json=chat_body(make_image(), ttl_seconds=5),
                        headers=auth(user_key)).json["id"]  # fmt: skip
    forever = client.post("/v1/jobs", json=chat_body(make_image()),
                          headers=auth(user_key)).json["id"]  # fmt: skip
    events = Recorder()
    assert expire_overdue(api.jobs, events, utcnow()) == 0
    later = utcnow() + timedelta(seconds=6)
    assert expire_overdue(api.jobs, events, later) == 1
    assert api.jobs.get(short).status is JobStatus.EXPIRED
    assert api.jobs.get(forever).status is JobStatus.QUEUED
    assert events.seen == [(short, "expired")]


def test_retention_deletes_images_no_job_still_needs(client, api, user_key):
    shared, own = make_image(64, 48), make_image(50, 50)
    old_shared = client.post("/v1/jobs", json=chat_body(shared), headers=auth(user_key)).json
    old_own = client.post("/v1/jobs", json=chat_body(own), headers=auth(user_key)).json
    now = utcnow()
    _finish(api, old_shared["id"], now)
    _finish(api, old_own["id"], now)
    fresh = client.post("/v1/jobs", json=chat_body(shared), headers=auth(user_key)).json

    later = now + timedelta(days=31)
    report = remove_old_data(api.jobs, api.blobs, later, timedelta(days=30))
    assert report.jobs == 2 and report.images_deleted == 1
    own_key = api.jobs.get(old_own["id"]).images[0].key
    shared_key = api.jobs.get(fresh["id"]).images[0].key
    assert not api.blobs.exists(own_key)
    assert api.blobs.exists(shared_key)  # the queued job still needs it

    body = client.get(f"/v1/jobs/{old_own['id']}", headers=auth(user_key)).json
    assert body["data_removed"] is True and body["output"] is None
    assert body["status"] == "succeeded"
    assert body["usage"]["prompt_tokens"] == 10  # accounting stays
    assert api.jobs.get(old_own["id"]).messages == ()
    again = remove_old_data(api.jobs, api.blobs, later, timedelta(days=30))
    assert again.jobs == 0


def test_retention_keeps_an_image_stored_again_after_the_cutoff(client, api, user_key):
    image = make_image(40, 40)
    job = client.post("/v1/jobs", json=chat_body(image), headers=auth(user_key)).json
    now = utcnow()
    _finish(api, job["id"], now - timedelta(seconds=10))
    # The job finished before the cutoff (now - 5 s) but its image object was written after it,
    # as when a new job with the same image is being submitted: the image must stay.
    report = remove_old_data(api.jobs, api.blobs, now, timedelta(seconds=5))
    assert report.jobs == 1 and report.images_deleted == 0
    assert api.blobs.exists(api.jobs.get(job["id"]).images[0].key)


def _broker(api):
    return redis.Redis.from_url(api.settings.broker_url)


def _drop_message(client: redis.Redis, job_id: str) -> bytes:
    """Lose ``job_id``'s message, as a crash between commit and publish (or a broker wipe) would;
    returns it."""
    for name in priority_queue_names("inference").values():
        for raw in client.lrange(name, 0, -1):
            if json.loads(raw)["headers"]["id"] == job_id:
                client.lrem(name, 1, raw)
                return bytes(raw)
    raise AssertionError(f"no message for {job_id}")


def test_broker_scan_sees_waiting_and_unacked_messages_of_every_priority(client, api, user_key):
    ids = [
        client.post(
            "/v1/jobs", json=chat_body(make_image(), priority=p), headers=auth(user_key)
        ).json["id"]
        for p in ("high", "normal", "low")
    ]
    broker = _broker(api)
    try:
        # A worker has taken the low one: kombu keeps it in the unacked hash until the ack.
        raw = broker.rpop("inference:9")
        broker.hset(UNACKED_KEY, "tag-1", json.dumps([json.loads(raw), "", "inference"]))
        broker.hset(UNACKED_KEY, "tag-2", json.dumps([{"headers": {"id": "x"}}, "", "webhooks"]))
        broker.rpush("inference", b"not json")
        held = RedisQueuedMessages(broker).held("inference")
        assert held.waiting == {ids[0], ids[1]} and held.delivered == {ids[2]}
    finally:
        broker.close()


def test_requeue_lost_publishes_again_only_old_queued_jobs_with_no_message(client, api, user_key):
    def submit(**extra):
        body = chat_body(make_image(), **extra)
        return client.post("/v1/jobs", json=body, headers=auth(user_key)).json["id"]

    kept, lost, lost_low, canceled = submit(), submit(), submit(priority="low"), submit()
    assert client.post(f"/v1/jobs/{canceled}/cancel", headers=auth(user_key)).status_code == 200
    broker = _broker(api)
    scan = RedisQueuedMessages(broker)
    try:
        for job_id in (lost, lost_low, canceled):
            _drop_message(broker, job_id)
        # Younger than the grace period: the API may be between its commit and its publish.
        assert _sweep(api, scan, utcnow()) == 0
        later = utcnow() + timedelta(minutes=3)
        assert _sweep(api, scan, later) == 2
        assert scan.held("inference").all == {kept, lost, lost_low}
        assert any(json.loads(raw)["headers"]["id"] == lost_low
                   for raw in broker.lrange("inference:9", 0, -1))  # fmt: skip
        # Nothing lost any more: a second sweep publishes nothing, so no duplicates pile up.
        assert _sweep(api, scan, later) == 0
        assert sum(broker.llen(n) for n in priority_queue_names("inference").values()) == 3
    finally:
        broker.close()


def _sweep(api, scan, now, max_attempts: int = 3) -> int:
    """The lost-job sweep at ``now``, as beat runs it (2 minutes' grace for new jobs)."""
    grace = timedelta(minutes=2)
    return requeue_lost(
        api.jobs, scan, api.queue, api.registry, now, grace,
        max_attempts=max_attempts, events=NoJobEvents(),
    )  # fmt: skip


def _deliver(client: redis.Redis, job_id: str) -> None:
    """Move ``job_id``'s message to the unacked hash, as kombu does when a worker takes it."""
    raw = _drop_message(client, job_id)
    client.hset(UNACKED_KEY, job_id, json.dumps([json.loads(raw), "", "inference"]))


def test_requeue_lost_publishes_again_a_running_job_whose_worker_died(client, api, user_key):
    def submit():
        body = chat_body(make_image())
        return client.post("/v1/jobs", json=body, headers=auth(user_key)).json["id"]

    dead, alive = submit(), submit()
    broker = _broker(api)
    scan = RedisQueuedMessages(broker)
    now = utcnow()
    try:
        for job_id in (dead, alive):
            _deliver(broker, job_id)  # taken by a worker: unacked until it finishes
        assert api.jobs.claim(dead, now, timedelta(seconds=30)) is not None
        assert api.jobs.claim(alive, now, timedelta(minutes=10)) is not None
        assert _sweep(api, scan, now) == 0
        # 5 minutes on, the first lease lapsed: that worker is gone (a live one renews its
        # leases). Its unacked message would only come back after the visibility timeout.
        later = now + timedelta(minutes=5)
        assert _sweep(api, scan, later) == 1
        assert scan.held("inference").waiting == {dead}
        assert _sweep(api, scan, later) == 0
        # The job was queued again (one lost attempt); a worker takes the new message.
        taken = api.jobs.claim(dead, later, timedelta(seconds=30))
        assert taken is not None and (taken.attempts, taken.lost_attempts) == (2, 1)
    finally:
        broker.close()


def test_requeue_lost_ends_a_job_that_lost_its_worker_max_attempts_times(client, api, user_key):
    body = chat_body(make_image())
    job_id = client.post("/v1/jobs", json=body, headers=auth(user_key)).json["id"]
    broker = _broker(api)
    scan = RedisQueuedMessages(broker)
    now = utcnow()
    try:
        _deliver(broker, job_id)  # taken by a worker, which dies: nothing waits in the queue
        assert api.jobs.claim(job_id, now, timedelta(seconds=30)).attempts == 1
        now += timedelta(seconds=31)
        assert _sweep(api, scan, now, max_attempts=2) == 1  # lost once: queued, published again
        assert api.jobs.get(job_id).status is JobStatus.QUEUED
        assert api.jobs.claim(job_id, now, timedelta(seconds=30)).attempts == 2
        now += timedelta(seconds=31)
        assert _sweep(api, scan, now, max_attempts=2) == 0  # lost twice: ends here
        job = api.jobs.get(job_id)
        assert (job.status, job.error_code, job.billed) == (JobStatus.FAILED, "worker_lost", False)
    finally:
        broker.close()
