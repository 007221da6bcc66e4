"""/v1/admin/queues, /metrics and the /admin page, over the real Redis, SQLite and SeaweedFS."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from services.admin.heartbeats import RedisHeartbeats
from services.admin.types import WorkerInfo
from services.auth.keys import Role
from services.clock import utcnow
from services.types import JobStatus
from tests.conftest import auth
from tests.helpers import chat_body
from tests.services.admin.jobrows import add_job
from tests.support.images import make_image
from tests.support.keys import new_key
from tests.support.roots import build_test_api


@pytest.fixture
def settings(settings_for):
    return settings_for(metrics_cache_ms=0)


@pytest.fixture
def admin_key(api):
    return new_key(api.keys, "root", Role.ADMIN).token


def submit(client, key, n=1, **extra):
    ids = []
    for _ in range(n):
        response = client.post("/v1/jobs", json=chat_body(make_image(), **extra), headers=auth(key))
        assert response.status_code == 202, response.json
        ids.append(response.json["id"])
    return ids


def beat(broker_url, pid=4242, slots=4):
    now = utcnow()
    beats = RedisHeartbeats.from_url(broker_url)
    beats.beat(
        WorkerInfo("gpu-7", pid, ("inference",), "transformers", "loupe-tiny-mllama", slots, 1,
                   now, now),
        ttl_seconds=30,
    )  # fmt: skip
    beats.close()


def metric_samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(("key_name", "status", "code"), [
    (None, 401, "missing_api_key"), ("user", 403, "admin_required"),
])  # fmt: skip
def test_admin_queues_without_admin_key_is_refused(client, user_key, key_name, status, code):
    headers = auth(user_key) if key_name == "user" else {}
    response = client.get("/v1/admin/queues", headers=headers)
    assert response.status_code == status
    assert response.json["error"]["code"] == code


def test_admin_queues_reports_depth_age_jobs_workers_and_failures(
    client, api, user_key, admin_key, broker_url
):
    submit(client, user_key, 2)
    submit(client, user_key, 1, priority="high")
    owner = api.keys.authenticate(user_key).id
    engine = api.db_engine
    now = utcnow()
    add_job(engine, owner, created=now - timedelta(seconds=9), status="failed",
            started=now - timedelta(seconds=8), completed=now - timedelta(seconds=2),
            error_code="engine_error", error_message="CUDA out of memory")  # fmt: skip
    beat(broker_url)

    response = client.get("/v1/admin/queues", headers=auth(admin_key))

    assert response.status_code == 200, response.json
    body = response.json
    assert [q["queue"] for q in body["queues"]] == ["inference", "webhooks", "maintenance"]
    queue = body["queues"][0]
    assert (queue["queue"], queue["depth"], queue["unacked"]) == ("inference", 3, 0)
    by_priority = {p["priority"]: p for p in queue["priorities"]}
    assert by_priority["high"]["depth"] == 1
    assert by_priority["normal"] == {
        "priority": "normal", "list": "inference:5", "depth": 2, "in_broker": 0,
        "oldest_age_seconds": by_priority["normal"]["oldest_age_seconds"],
    }  # fmt: skip
    assert by_priority["low"]["oldest_age_seconds"] is None
    assert queue["oldest_age_seconds"] >= 0
    assert body["jobs"]["by_status"][JobStatus.QUEUED] == 3
    assert body["jobs"]["by_status"][JobStatus.FAILED] == 1
    assert body["workers"]["online"] == 1
    assert body["workers"]["items"][0]["id"] == "gpu-7:4242"
    assert body["workers"]["items"][0]["slots"] == 4
    assert body["throughput"]["1m"]["completed"] == 1
    assert body["throughput"]["1m"]["run_seconds"]["p50"] == 6.0
    assert body["recent_failures"][0]["error"] == {
        "code": "engine_error", "message": "CUDA out of memory",
    }  # fmt: skip


def test_metrics_expose_queue_workers_and_job_families(
    client, api, user_key, admin_key, broker_url
):
    submit(client, user_key, 2)
    owner = api.keys.authenticate(user_key).id
    now = utcnow()
    add_job(api.db_engine, owner, created=now - timedelta(seconds=3), status="succeeded",
            started=now - timedelta(seconds=2), completed=now, prompt_tokens=20,
            completion_tokens=5)  # fmt: skip
    beat(broker_url, slots=8)

    response = client.get("/metrics", headers=auth(admin_key))

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = metric_samples(response.get_data(as_text=True))
    q = (("priority", "normal"), ("queue", "inference"))
    assert samples[("loupe_queue_depth", q)] == 2
    assert samples[("loupe_queue_oldest_age_seconds", q)] >= 0
    assert samples[("loupe_workers_online", ())] == 1
    assert samples[("loupe_worker_slots", (("model", "loupe-tiny-mllama"),))] == 8
    assert samples[("loupe_jobs_by_status", (("status", "queued"),))] == 2
    model = ("model", "loupe-tiny-mllama")
    assert samples[("loupe_jobs_total", (model, ("status", "succeeded")))] == 1
    assert samples[("loupe_jobs_worker_lost_total", (model,))] == 0
    assert samples[("loupe_tokens_total", (("kind", "prompt"), model))] == 20
    assert samples[("loupe_job_run_seconds_count", (model,))] == 1
    assert samples[("loupe_job_run_seconds_bucket", (("le", "2.5"), model))] == 1
    assert samples[("loupe_job_run_seconds_bucket", (("le", "1.0"), model))] == 0
    assert samples[("loupe_cost_total", (("currency", "USD"), model))] > 0


def test_metrics_without_a_token_setting_need_an_admin_key(client, user_key, admin_key):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth(user_key)).status_code == 403
    assert client.get("/metrics", headers=auth(admin_key)).status_code == 200


def test_metrics_opened_explicitly_need_nothing(settings_for):
    api = build_test_api(settings_for(metrics_open=True))
    try:
        assert api.client().get("/metrics").status_code == 200
    finally:
        api.close()


def test_metrics_with_token_setting_need_the_token(settings_for):
    settings = settings_for(metrics_token="s3cret")
    api = build_test_api(settings)
    try:
        client = api.client()
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers=auth("nope"))
        assert wrong.status_code == 401
        assert wrong.json["error"]["code"] == "invalid_metrics_token"
        assert client.get("/metrics", headers=auth("s3cret")).status_code == 200
    finally:
        api.close()


def test_metrics_when_redis_is_down_is_503(settings_for):
    settings = settings_for(broker_url="redis://127.0.0.1:1/0", metrics_open=True)
    api = build_test_api(settings)
    try:
        response = api.client().get("/metrics")
        assert response.status_code == 503
        assert response.json["error"]["code"] == "unavailable"
    finally:
        api.close()


def test_admin_page_is_public_html_with_its_assets(client):
    page = client.get("/admin")
    assert page.status_code == 200
    assert page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert 'id="admin-key"' in html
    assert "/v1/admin/queues" in html
    script = client.get("/admin/static/dashboard.js")
    assert script.status_code == 200
    assert b"sessionStorage" in script.data
    script.close()
    style = client.get("/admin/static/dashboard.css")
    assert style.status_code == 200
    style.close()


def test_admin_snapshot_is_cached_for_the_configured_time(settings_for, broker_url):
    settings = settings_for(metrics_cache_ms=60_000)
    api = build_test_api(settings)
    try:
        client = api.client()
        admin = new_key(api.keys, "root", Role.ADMIN).token
        first = client.get("/v1/admin/queues", headers=auth(admin)).json
        broker = redis.Redis.from_url(broker_url)
        broker.lpush("inference:5", "x")
        broker.close()
        second = client.get("/v1/admin/queues", headers=auth(admin)).json
        assert second == first
    finally:
        api.close()
