"""Webhooks through the real stack: gunicorn API, inference worker, light worker with beat, Redis.

A failing receiver gets its retry from the SQL schedule: the light worker's beat runs the webhook
sweep every second here, and no Celery countdown message waits in Redis for the retry.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
import requests
from standardwebhooks import Webhook

from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from services.webhooks.store import SqlWebhookStore
from services.webhooks.types import EventType, WebhookEvent
from tests.e2e.conftest import make_env, start_api, start_webhook_worker, start_worker, wait_until
from tests.helpers import chat_body
from tests.receiver import running_receiver
from tests.support.broker import held_deliveries
from tests.support.images import make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e

RETRY_SECONDS = 4.0  # the start event's retry: long enough to look at the broker meanwhile
JITTER = 0.2


@pytest.fixture
def receiver():
    yield from running_receiver()


def test_e2e_signed_start_and_completed_webhooks_in_order_retried_from_sql(
    redis_server, s3_server, models_dir, tmp_path, receiver
):
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=3)
    env |= {
        "LOUPE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "LOUPE_WEBHOOK_ALLOW_HTTP": "true",
        "LOUPE_WEBHOOK_CONCURRENCY": "4",
        "LOUPE_WEBHOOK_RETRY_SCHEDULE": f"0,{RETRY_SECONDS},1,1",
        "LOUPE_WEBHOOK_SWEEP_SECONDS": "1",
    }
    receiver.answers = [503]  # the first POST (start) fails once: it is retried, in order
    parts = build_test_api(load_settings(env))
    broker = redis.Redis.from_url(env["LOUPE_BROKER_URL"])
    procs = []
    try:
        key = parts.keys.create("hooks", Role.USER, utcnow())[1]
        headers = {"Authorization": f"Bearer {key}"}
        procs.append(start_worker(env, tmp_path / "worker.log", "e2e-hooks-gpu"))
        hooks = start_webhook_worker(
            env, tmp_path / "webhooks.log", "e2e-hooks", beat_schedule=tmp_path / "beat"
        )
        procs.append(hooks)
        api, url = start_api(env, tmp_path / "api.log")
        procs.append(api)

        secret = requests.get(f"{url}/v1/webhook-secret", headers=headers, timeout=30).json()
        body = chat_body(
            make_image(), webhook=receiver.url, webhook_events_filter=["start", "completed"]
        )
        created = requests.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=30)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]

        # The start event's first attempt failed: its retry is a due time in SQL, and no
        # message for it (a countdown) waits in the broker's queue or unacked hash.
        start = wait_until(lambda: _retry_scheduled(parts.webhook_store, job_id), 120, "a retry")
        assert start.next_attempt_at is not None
        assert (start.next_attempt_at - utcnow()).total_seconds() > 0.5
        held = held_deliveries(broker, "webhooks")
        assert [h for h in held if h.event_id == start.id or h.eta is not None] == []

        got = receiver.wait_for(3, timeout=120)
        verifier = Webhook(secret["secret"])
        events = [verifier.verify(r.body, r.headers) for r in got]
        assert [e["type"] for e in events] == ["job.started", "job.started", "job.completed"]
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        assert got[2].headers["webhook-id"] != got[0].headers["webhook-id"]
        # The retry went out when due (the schedule, less its jitter), not at once.
        assert got[1].at - got[0].at >= RETRY_SECONDS * (1 - JITTER) - 0.1
        assert events[0]["data"]["status"] == "running"
        polled = requests.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        assert polled["status"] == "succeeded"
        assert events[2]["data"] == polled  # the webhook body is the polling body

        log = requests.get(
            f"{url}/v1/jobs/{job_id}/webhook-deliveries", headers=headers, timeout=30
        ).json()["data"]
        assert [(e["type"], e["status"]) for e in log] == [
            ("job.started", "delivered"),
            ("job.completed", "delivered"),
        ]
        assert [a["http_status"] for a in log[0]["attempts"]] == [503, 200]
        # The webhooks worker never loads a model; the inference worker did the job. Its beat's
        # sweep published the retry.
        assert "loading model" not in hooks.log_text()
        assert "due webhook attempt" in hooks.log_text()
        assert json.loads(got[2].body)["data"]["id"] == job_id
        time.sleep(1)  # a sweep or two more: nothing is published, nothing waits
        assert held_deliveries(broker, "webhooks") == []
        assert len(receiver.requests) == 3
    finally:
        for proc in reversed(procs):
            proc.stop()
        broker.close()
        parts.close()


def _retry_scheduled(store: SqlWebhookStore, job_id: str) -> WebhookEvent | None:
    """The job's start event once its first attempt failed and its retry waits, else None."""
    event = store.find_event(job_id, EventType.STARTED)
    if event is None or event.next_attempt_at is None:
        return None
    attempts = store.attempts_for([event.id])[event.id]
    done = len(attempts) == 1 and attempts[0].completed_at is not None
    return event if done and event.dispatched_until is None else None
