"""Expiry and retention sweeps, and the broker scan, against real SQLite, S3 and Redis."""

from __future__ import annotations

import json
from datetime import timedelta

import redis

from services.clock import utcnow
from services.jobs.maintenance import expire_overdue, remove_old_data
from services.jobs.queue import UNACKED_KEY, RedisQueuedMessages
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


def test_broker_scan_sees_waiting_and_unacked_messages_of_every_priority(client, api, user_key):
    ids = [
        client.post(
            "/v1/jobs", json=chat_body(make_image(), priority=p), headers=auth(user_key)
        ).json["id"]
        for p in ("high", "normal", "low")
    ]
    assert api.dispatch() == 3  # handed to the broker
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
