"""Jobs through the whole system: API → SQL + SeaweedFS → Redis → Celery worker → tiny Mllama."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import redis
import requests

from services.auth.keys import Role
from services.clock import utcnow
from services.jobs.queue import CeleryProducer
from services.settings import load_settings
from services.types import JobStatus
from tests.conftest import auth
from tests.e2e.conftest import make_env, start_api, start_worker
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.models import TINY_MODEL
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "canceled", "expired"}


def wait_for(get: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = get()
        if body["status"] in TERMINAL:
            return body
        time.sleep(0.2)
    raise AssertionError(f"job did not finish: {body}")


def assert_succeeded(body: dict[str, Any]) -> None:
    assert body["status"] == "succeeded", body
    assert body["output"]["text"]
    assert body["output"]["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["images"] == 1
    assert body["metrics"]["queue_seconds"] >= 0
    assert body["metrics"]["run_seconds"] > 0


def test_e2e_json_job_succeeds(worker, e2e_client, e2e_key):
    response = e2e_client.post(
        "/v1/jobs", json=chat_body(make_image(), max_tokens=6), headers=auth(e2e_key)
    )
    assert response.status_code == 202, response.json
    body = wait_for(
        lambda: e2e_client.get(response.headers["Location"], headers=auth(e2e_key)).json
    )
    assert_succeeded(body)
    assert body["usage"]["completion_tokens"] <= 6


def test_e2e_multipart_job_succeeds(worker, e2e_client, e2e_key):
    response = e2e_client.post(
        "/v1/jobs",
        data={"image": (io.BytesIO(make_image(90, 70, "JPEG")), "x.jpg"), "prompt": "What?"},
        headers=auth(e2e_key),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    body = wait_for(
        lambda: e2e_client.get(response.headers["Location"], headers=auth(e2e_key)).json
    )
    assert_succeeded(body)


def test_e2e_uploaded_file_job_succeeds(worker, e2e_client, e2e_key):
    uploaded = e2e_client.post(
        "/v1/files",
        data={"file": (io.BytesIO(make_image(60, 60, "JPEG")), "y.jpg")},
        headers=auth(e2e_key),
        content_type="multipart/form-data",
    )
    assert uploaded.status_code == 201, uploaded.json
    body = chat_body(None, max_tokens=4)
    body["messages"][0]["content"].insert(
        0, {"type": "image_file", "image_file": {"file_id": uploaded.json["id"]}}
    )
    response = e2e_client.post("/v1/jobs", json=body, headers=auth(e2e_key))
    assert response.status_code == 202, response.json
    done = wait_for(
        lambda: e2e_client.get(response.headers["Location"], headers=auth(e2e_key)).json
    )
    assert_succeeded(done)


def test_e2e_duplicate_delivery_runs_model_once(worker, e2e_client, e2e_api, e2e_key):
    response = e2e_client.post(
        "/v1/jobs", json=chat_body(make_image(), max_tokens=4), headers=auth(e2e_key)
    )
    job_id = response.json["id"]
    duplicate = CeleryProducer(e2e_api.settings)
    duplicate.send("loupe.inference.run", [job_id], "inference")
    duplicate.close()
    wait_for(lambda: e2e_client.get(f"/v1/jobs/{job_id}", headers=auth(e2e_key)).json)
    deadline = time.monotonic() + 60
    while f"job {job_id}: duplicate message ignored" not in worker.log_text():
        assert time.monotonic() < deadline, "the duplicate message was never delivered"
        time.sleep(0.2)
    job = e2e_api.jobs.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 1  # claimed (and so run) exactly once


def test_e2e_job_survives_api_restart(worker, e2e_env, e2e_key, tmp_path):
    api, url = start_api(e2e_env, tmp_path / "api1.log")
    try:
        response = requests.post(
            url + "/v1/jobs",
            files={"image": ("a.png", make_image(50, 50), "image/png")},
            data={"prompt": "Describe.", "max_tokens": "4"},
            headers=auth(e2e_key),
            timeout=30,
        )
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
    finally:
        api.kill()
    api, url = start_api(e2e_env, tmp_path / "api2.log")
    try:
        body = wait_for(
            lambda: requests.get(url + location, headers=auth(e2e_key), timeout=10).json()
        )
        assert_succeeded(body)
    finally:
        api.stop()


def test_e2e_worker_refuses_to_start_without_its_model(e2e_env, tmp_path):
    env = e2e_env | {"LOUPE_DEFAULT_MODEL": "llama-3.2-11b-vision-instruct"}
    with pytest.raises(RuntimeError, match=r"cannot load model llama-3\.2-11b-vision-instruct"):
        start_worker(env, tmp_path / "worker.log", "broken")


def test_e2e_a_model_on_its_own_queue_is_run_by_the_worker_of_that_queue(
    redis_server, s3_server, models_dir, tmp_path
):
    # LOUPE_MODEL_QUEUES sends the tiny model's jobs to "tiny-pool"; the only worker consumes
    # that queue alone (as a GPU pool for one model would), and nothing waits on "inference".
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=5) | {
        "LOUPE_MODEL_QUEUES": f"{TINY_MODEL}=tiny-pool"
    }
    broker = redis.Redis.from_url(env["LOUPE_BROKER_URL"])
    broker.flushdb()
    api = build_test_api(load_settings(env))
    pool = start_worker(env, tmp_path / "pool.log", "pool", queues="tiny-pool")
    try:
        client = api.client()
        key = api.keys.create("pool", Role.USER, utcnow())[1]
        response = client.post(
            "/v1/jobs", json=chat_body(make_image(), max_tokens=4), headers=auth(key)
        )
        assert response.status_code == 202, response.json
        body = wait_for(lambda: client.get(response.headers["Location"], headers=auth(key)).json)
        assert_succeeded(body)
        assert broker.llen("inference") == broker.llen("inference:5") == 0
        assert "tiny-pool" in pool.log_text()
    finally:
        pool.stop()
        api.close()
        broker.close()
