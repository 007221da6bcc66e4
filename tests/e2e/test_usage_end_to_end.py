"""Billing through the real stack: API → Redis → Celery worker → ledger, redelivery included."""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from typing import Any

import pytest
import redis

from services.auth.keys import Role
from services.clock import utcnow
from services.jobs.queue import CeleryTaskQueue
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import ledger_rows, make_env, start_worker, wait_until
from tests.e2e.test_jobs_end_to_end import wait_for
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.models import TINY_MODEL
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e
PRICES = {TINY_MODEL: {"input_per_million": "0.35", "output_per_million": "0.40",
                       "per_image": "0.0005058"}}  # fmt: skip


def _wait_log(worker: Any, text: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.log_text().count(text) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"worker never logged {text!r} {count} times")


def test_e2e_job_is_billed_once_even_when_its_message_comes_again(worker, e2e_env):
    # This API process has a price card for the tiny model; the worker has none. The job is
    # billed from the card snapshotted at submit, whatever the worker's registry says.
    env = e2e_env | {"LOUPE_PRICE_OVERRIDES": json.dumps(PRICES)}
    api = build_test_api(load_settings(env))
    try:
        client = api.client()
        key = api.keys.create("billing", Role.USER, utcnow())[1]
        response = client.post(
            "/v1/jobs", json=chat_body(make_image(50, 50), max_tokens=6), headers=auth(key)
        )
        assert response.status_code == 202, response.json
        job_id = response.json["id"]
        assert Decimal(response.json["estimated_cost"]["max"]) > 0
        body = wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json)
        assert body["status"] == "succeeded", body
        # The worker finished but (say) died before acking: the broker delivers it again, twice.
        queue = CeleryTaskQueue(api.settings)
        try:
            queue.enqueue_inference(job_id)
            queue.enqueue_inference(job_id)
        finally:
            queue.close()
        _wait_log(worker, f"job {job_id}: duplicate message ignored", 2)
        rows = ledger_rows(api, job_id)
        assert len(rows) == 1
        cost = body["usage"]["cost"]
        assert rows[0]["cost_total"] == Decimal(cost["total"]) > Decimal("0.0005058")
        assert Decimal(cost["total"]) <= Decimal(body["estimated_cost"]["max"])
        usage = client.get("/v1/usage", headers=auth(key)).json
        assert usage["totals"]["jobs"] == 1 and usage["totals"]["cost"] == cost
    finally:
        api.close()


def test_e2e_worker_killed_after_the_model_before_the_ack_bills_once(
    redis_server, s3_server, models_dir, tmp_path
):
    # A real SIGKILL between "job finished and billed" and "message acked": the broker keeps the
    # message unacked and, after the visibility timeout, a second worker gets it again.
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=4) | {
        "LOUPE_PRICE_OVERRIDES": json.dumps(PRICES),
        "LOUPE_JOB_TIMEOUT_SECONDS": "2",
        "LOUPE_MAX_JOB_TIMEOUT_SECONDS": "2",
        "LOUPE_VISIBILITY_TIMEOUT_SECONDS": "3",
    }
    broker = redis.Redis.from_url(env["LOUPE_BROKER_URL"])
    broker.flushdb()
    api = build_test_api(load_settings(env))
    crashing = start_worker(env, tmp_path / "crashing.log", "crashing",
                            app="tests.e2e.crashing_worker")  # fmt: skip
    survivor = None
    try:
        client = api.client()
        key = api.keys.create("crash", Role.USER, utcnow())[1]
        response = client.post(
            "/v1/jobs", json=chat_body(make_image(40, 40), max_tokens=4), headers=auth(key)
        )
        assert response.status_code == 202, response.json
        job_id = response.json["id"]
        wait_until(lambda: not crashing.alive(), 120, "the SIGKILL", 0.2)
        assert crashing.returncode == -signal.SIGKILL
        assert "SIGKILL before ack" in crashing.log_text()
        body = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json
        assert body["status"] == "succeeded", body
        assert broker.hlen("unacked") == 1  # finished, billed, and still owed to the broker

        survivor = start_worker(env, tmp_path / "survivor.log", "survivor")
        _wait_log(survivor, f"job {job_id}: duplicate message ignored", 1, timeout=90)
        wait_until(lambda: broker.hlen("unacked") == 0, 30, "the ack", 0.2)
        rows = ledger_rows(api, job_id)
        assert len(rows) == 1
        assert rows[0]["cost_total"] == Decimal(body["usage"]["cost"]["total"]) > 0
        again = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json
        assert again["usage"] == body["usage"] and again["completed_at"] == body["completed_at"]
        assert client.get("/v1/usage", headers=auth(key)).json["totals"]["jobs"] == 1
    finally:
        crashing.stop()
        if survivor is not None:
            survivor.stop()
        api.close()
        broker.close()
