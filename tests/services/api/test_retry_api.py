"""POST /v1/jobs/{id}/retry and the admin view's retry (POST /v1/admin/jobs/{id}/retry, the
dashboard's failures list) over real SQLite, SeaweedFS and Redis."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import redis

from services.auth.keys import Role
from services.clock import utcnow
from services.jobs.notify import job_channel
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.dispatch import broker_ids
from tests.support.images import make_image
from tests.support.jobs import run_to
from tests.support.keys import new_key


@pytest.fixture
def settings(settings_for):
    return settings_for(metrics_cache_ms=0)  # the admin snapshot is read fresh


@pytest.fixture
def admin_key(api):
    return new_key(api.keys, "root", Role.ADMIN).token


def _submit(client, key) -> str:
    response = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(key))
    assert response.status_code == 202, response.json
    return response.json["id"]


def _ended(client, api, key, outcome="failed") -> str:
    job_id = _submit(client, key)
    run_to(api.jobs, job_id, outcome, utcnow(), prompt=1000, completion=20)
    return job_id


def _retry(client, key, job_id):
    return client.post(f"/v1/jobs/{job_id}/retry", headers=auth(key))


def test_retry_answers_202_with_the_job_queued_again(client, api, settings, user_key):
    job_id = _ended(client, api, user_key)
    listener = redis.Redis.from_url(settings.redis_url)
    pubsub = listener.pubsub()
    pubsub.subscribe(job_channel(job_id))
    try:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        response = _retry(client, user_key, job_id)
        announced = pubsub.get_message(timeout=5)
    finally:
        pubsub.close()
        listener.close()
    assert response.status_code == 202, response.json
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    body = response.json
    assert (body["id"], body["status"], body["retried_from_status"]) == (job_id, "queued", "failed")
    assert (body["attempts"], body["error"], body["usage"], body["output"]) == (1, None, None, None)
    assert body["queue_position"] == 0 and body["completed_at"] is None
    assert json.loads(announced["data"]) == {"id": job_id, "status": "queued"}
    # Back in SQL's backlog: the dispatcher's next pass hands it to the broker again.
    assert api.dispatch() == 1
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        assert job_id in broker_ids(broker)
    finally:
        broker.close()
    again = client.get(f"/v1/jobs/{job_id}", headers=auth(user_key)).json
    assert again["retried_from_status"] == "failed"


def test_a_job_never_retried_shows_null(client, user_key):
    body = client.get(f"/v1/jobs/{_submit(client, user_key)}", headers=auth(user_key)).json
    assert body["retried_from_status"] is None


@pytest.mark.parametrize("outcome", ["canceled_queued", "canceled_running", "expired"])
def test_retry_takes_canceled_and_expired_jobs_too(client, api, user_key, outcome):
    response = _retry(client, user_key, _ended(client, api, user_key, outcome))
    assert response.status_code == 202, response.json
    assert response.json["retried_from_status"] == outcome.split("_")[0]


def test_retry_of_another_keys_or_no_job_is_404(client, api, user_key, other_key):
    job_id = _ended(client, api, user_key)
    for key, target in [(other_key, job_id), (user_key, "job_nope")]:
        response = _retry(client, key, target)
        assert response.status_code == 404
        assert response.json["error"]["code"] == "job_not_found"
    assert api.jobs.get(job_id).status.value == "failed"


@pytest.mark.parametrize(
    ("outcome", "code"),
    [("succeeded", "job_not_retryable"), ("queued", "job_not_finished"),
     ("running", "job_not_finished")],
)  # fmt: skip
def test_retry_of_a_succeeded_or_active_job_is_409(client, api, user_key, outcome, code):
    job_id = _ended(client, api, user_key, outcome)
    response = _retry(client, user_key, job_id)
    assert response.status_code == 409
    assert response.json["error"]["code"] == code
    assert api.jobs.get(job_id).status.value == outcome


def test_retry_twice_is_409_the_second_time(client, api, user_key):
    job_id = _ended(client, api, user_key)
    assert _retry(client, user_key, job_id).status_code == 202
    second = _retry(client, user_key, job_id)
    assert second.status_code == 409 and second.json["error"]["code"] == "job_not_finished"


def test_retry_over_the_queued_jobs_limit_is_429_and_changes_nothing(client, api, user_key):
    job_id = _ended(client, api, user_key)
    _submit(client, user_key)
    api.quotas.update(api.keys.authenticate(user_key).id, utcnow(), max_queued=1)
    response = _retry(client, user_key, job_id)
    assert response.status_code == 429
    assert response.json["error"]["code"] == "too_many_queued_jobs"
    assert response.headers["Retry-After"] == "10"
    assert api.jobs.get(job_id).status.value == "failed"


def test_usage_counts_each_billed_attempt_of_a_retried_job(client, api, user_key):
    job_id = _ended(client, api, user_key)  # a billed failure
    first = client.get(f"/v1/jobs/{job_id}", headers=auth(user_key)).json["usage"]["cost"]
    assert _retry(client, user_key, job_id).status_code == 202
    run_to(api.jobs, job_id, "succeeded", utcnow(), prompt=2000, completion=30)
    second = client.get(f"/v1/jobs/{job_id}", headers=auth(user_key)).json["usage"]["cost"]
    usage = client.get("/v1/usage?group_by=model", headers=auth(user_key)).json
    assert usage["totals"]["jobs"] == 1
    assert usage["totals"]["prompt_tokens"] == 3000
    total = Decimal(first["total"]) + Decimal(second["total"])
    assert Decimal(usage["totals"]["cost"]["total"]) == total


# --- the admin view: the last failed jobs, each with a retry ----------------------------------


def test_admin_lists_the_last_failed_jobs_and_retries_any_keys_job(
    client, api, user_key, admin_key
):
    job_id = _ended(client, api, user_key)
    failures = client.get("/v1/admin/queues", headers=auth(admin_key)).json["recent_failures"]
    assert [(f["id"], f["key_id"]) for f in failures] == [
        (job_id, api.keys.authenticate(user_key).id)
    ]
    response = client.post(f"/v1/admin/jobs/{job_id}/retry", headers=auth(admin_key))
    assert response.status_code == 202, response.json
    assert (response.json["status"], response.json["retried_from_status"]) == ("queued", "failed")
    assert client.get("/v1/admin/queues", headers=auth(admin_key)).json["recent_failures"] == []
    mine = client.get(f"/v1/jobs/{job_id}", headers=auth(user_key)).json
    assert mine["status"] == "queued"  # the owner sees it queued again


def test_admin_retry_needs_an_admin_key_and_answers_404_and_409(client, api, user_key, admin_key):
    job_id = _ended(client, api, user_key, "succeeded")
    user = client.post(f"/v1/admin/jobs/{job_id}/retry", headers=auth(user_key))
    assert user.status_code == 403 and user.json["error"]["code"] == "admin_required"
    missing = client.post("/v1/admin/jobs/job_nope/retry", headers=auth(admin_key))
    assert missing.status_code == 404
    done = client.post(f"/v1/admin/jobs/{job_id}/retry", headers=auth(admin_key))
    assert done.status_code == 409 and done.json["error"]["code"] == "job_not_retryable"


def test_admin_page_offers_a_retry_for_each_failure(client):
    html = client.get("/admin").get_data(as_text=True)
    assert 'data-retry-url="/v1/admin/jobs/JOB_ID/retry"' in html
    assert 'id="retry-status"' in html and "<script>" not in html  # no inline script (CSP)
    script = client.get("/admin/static/dashboard.js")
    source = script.get_data(as_text=True)
    script.close()
    assert 'retryUrl.replace("JOB_ID"' in source and 'method: "POST"' in source
