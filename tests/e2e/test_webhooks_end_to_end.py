"""Webhooks through the real stack: gunicorn API, inference worker, webhooks worker, Redis."""

from __future__ import annotations

import json

import pytest
import requests
from standardwebhooks import Webhook

from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.e2e.conftest import make_env, start_api, start_webhook_worker, start_worker
from tests.helpers import chat_body
from tests.receiver import running_receiver
from tests.support.images import make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver():
    yield from running_receiver()


def test_e2e_signed_start_and_completed_webhooks_in_order(
    redis_server, s3_server, models_dir, tmp_path, receiver
):
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=3)
    env |= {
        "LOUPE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "LOUPE_WEBHOOK_ALLOW_HTTP": "true",
        "LOUPE_WEBHOOK_CONCURRENCY": "4",
        "LOUPE_WEBHOOK_RETRY_SCHEDULE": "0,1,1,1",
    }
    receiver.answers = [503]  # the first POST (start) fails once: it is retried, in order
    parts = build_test_api(load_settings(env))
    procs = []
    try:
        key = parts.keys.create("hooks", Role.USER, utcnow())[1]
        headers = {"Authorization": f"Bearer {key}"}
        procs.append(start_worker(env, tmp_path / "worker.log", "e2e-hooks-gpu"))
        hooks = start_webhook_worker(env, tmp_path / "webhooks.log", "e2e-hooks")
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

        got = receiver.wait_for(3, timeout=120)
        verifier = Webhook(secret["secret"])
        events = [verifier.verify(r.body, r.headers) for r in got]
        assert [e["type"] for e in events] == ["job.started", "job.started", "job.completed"]
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        assert got[2].headers["webhook-id"] != got[0].headers["webhook-id"]
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
        # The webhooks worker never loads a model; the inference worker did the job.
        assert "loading model" not in hooks.log_text()
        assert json.loads(got[2].body)["data"]["id"] == job_id
    finally:
        for proc in reversed(procs):
            proc.stop()
        parts.close()
