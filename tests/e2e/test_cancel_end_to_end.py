"""Canceling a running job aborts its engine request and frees its slot at once."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from services.api.app import create_app
from services.auth.keys import Role
from services.container import build_container, utcnow
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import make_env, start_worker
from tests.helpers import chat_body, make_image

pytestmark = pytest.mark.e2e


def _poll(client: Any, key: str, job_id: str, until: set[str], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json
        if body["status"] in until:
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {until}: {body}")


def test_e2e_cancel_running_job_frees_the_slot(redis_server, s3_server, models_dir, tmp_path):
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=2)
    env["LOUPE_WORKER_CONCURRENCY"] = "1"  # one slot: the second job waits for the first
    worker = start_worker(env, tmp_path / "worker.log", "one-slot")
    container = build_container(load_settings(env))
    try:
        client = create_app(container=container).test_client()
        key = container.keys.create("c", Role.USER, utcnow())[1]
        long_job = chat_body(make_image(), max_tokens=2048, ignore_eos=True)
        first = client.post("/v1/jobs", json=long_job, headers=auth(key)).json["id"]
        second = client.post(
            "/v1/jobs", json=chat_body(make_image(40, 40), max_tokens=4), headers=auth(key)
        ).json["id"]
        _poll(client, key, first, {"running"})
        assert client.get(f"/v1/jobs/{second}", headers=auth(key)).json["status"] == "queued"

        canceled_at = utcnow()
        response = client.post(f"/v1/jobs/{first}/cancel", headers=auth(key))
        assert response.status_code == 200
        assert response.json["cancel_requested"] is True

        one = _poll(client, key, first, {"canceled", "succeeded", "failed"})
        assert one["status"] == "canceled", one
        # The engine request was aborted part-way, and the tokens it used are accounted.
        assert 0 < one["usage"]["completion_tokens"] < 2048
        assert one["usage"]["prompt_tokens"] > 0
        two = _poll(client, key, second, {"succeeded", "failed"})
        assert two["status"] == "succeeded", two
        # The queued job took the freed slot straight away (not after 2048 tokens).
        started = datetime.fromisoformat(two["started_at"].replace("Z", "+00:00"))
        assert (started - canceled_at).total_seconds() < 5
    finally:
        container.close()
        worker.stop()
