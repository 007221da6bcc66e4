"""Per-key quotas at POST /v1/jobs: the right status, a clear message, nothing created."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import redis

from services.clock import utcnow
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.support.images import make_image
from tests.support.jobs import run_to
from tests.support.keys import new_key
from tests.support.models import LLAMA_90B
from tests.support.roots import build_test_api


@pytest.fixture
def key_id(api, user_key) -> str:
    return api.keys.authenticate(user_key).id


def _submit(client, key: str, shade: int = 0, **extra):
    image = make_image(64 + shade, 48)  # a distinct image per call: a distinct S3 object
    return client.post("/v1/jobs", json=chat_body(image, **extra), headers=auth(key))


def _counts(api, settings, s3_server) -> tuple[int, int, int]:
    """(jobs, S3 objects, broker messages once the dispatcher has handed out what it may)."""
    api.dispatch()
    return (
        count_jobs(api.db_engine),
        count_objects(s3_server, settings.s3_bucket),
        queue_length(settings.broker_url),
    )


def test_quota_rate_limit_is_429_with_retry_after_and_creates_nothing(
    client, api, settings, s3_server, user_key, key_id
):
    api.quotas.update(key_id, utcnow(), requests_per_minute=2)
    assert _submit(client, user_key, 1).status_code == 202
    assert _submit(client, user_key, 2).status_code == 202
    before = _counts(api, settings, s3_server)
    response = _submit(client, user_key, 3)
    assert response.status_code == 429
    assert response.json["error"]["code"] == "rate_limited"
    assert "2 requests per minute" in response.json["error"]["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert _counts(api, settings, s3_server) == before == (2, 2, 2)
    # The count lives in Redis, with an expiry, where every API process sees it.
    client_redis = redis.Redis.from_url(settings.broker_url)
    keys = client_redis.keys(f"loupe:rate:{key_id}:*")
    assert len(keys) == 1 and 0 < client_redis.ttl(keys[0]) <= 120
    client_redis.close()


def test_quota_rate_limit_is_shared_by_api_processes(client, settings, api, user_key, key_id):
    api.quotas.update(key_id, utcnow(), requests_per_minute=1)
    second = build_test_api(settings)  # another API process: its own pools, same Redis
    try:
        assert _submit(client, user_key, 1).status_code == 202
        response = _submit(second.client(), user_key, 2)
        assert response.status_code == 429
    finally:
        second.close()


def test_quota_max_queued_is_429_and_creates_nothing(
    client, api, settings, s3_server, user_key, other_key, key_id
):
    api.quotas.update(key_id, utcnow(), max_queued=1)
    assert _submit(client, user_key, 1).status_code == 202
    response = _submit(client, user_key, 2)
    assert response.status_code == 429
    assert response.json["error"]["code"] == "too_many_queued_jobs"
    assert response.headers["Retry-After"] == "10"
    assert _counts(api, settings, s3_server) == (1, 1, 1)
    assert _submit(client, other_key, 3).status_code == 202  # other keys are not limited


def test_quota_max_running_never_refuses_a_submit_the_dispatcher_holds_jobs_back(
    client, api, settings, s3_server, user_key, key_id
):
    api.quotas.update(key_id, utcnow(), max_running=1)
    ids = [_submit(client, user_key, n).json["id"] for n in range(3)]
    assert _counts(api, settings, s3_server) == (3, 3, 1)  # one handed out, two held back
    assert api.jobs.claim(ids[0], utcnow(), timedelta(seconds=60)) is not None
    assert api.dispatch() == 0  # it runs: still one in flight
    run_to(api.jobs, ids[0], "succeeded", utcnow())
    assert api.dispatch() == 1


def test_quota_spend_cap_is_402_and_creates_nothing(
    client, api, settings, s3_server, user_key, key_id
):
    body = _submit(client, user_key, 1, model=LLAMA_90B, max_tokens=1000).json
    estimate = Decimal(body["estimated_cost"]["max"])
    # Room for exactly one more such job besides the one queued (its maximum is reserved).
    api.quotas.update(key_id, utcnow(), monthly_spend_usd=estimate * 2)
    assert _submit(client, user_key, 2, model=LLAMA_90B, max_tokens=1000).status_code == 202
    before = _counts(api, settings, s3_server)
    response = _submit(client, user_key, 3, model=LLAMA_90B, max_tokens=1000)
    assert response.status_code == 402
    assert response.json["error"]["code"] == "spend_limit_reached"
    assert "Monthly spend cap of $" in response.json["error"]["message"]
    assert _counts(api, settings, s3_server) == before == (2, 2, 2)


def test_quota_spend_cap_counts_billed_cost_not_the_estimate_once_finished(
    client, api, user_key, key_id
):
    job_id = _submit(client, user_key, 1, model=LLAMA_90B, max_tokens=4000).json["id"]
    estimate = api.jobs.get(job_id).estimated_cost_max
    api.quotas.update(key_id, utcnow(), monthly_spend_usd=estimate * Decimal("1.5"))
    assert _submit(client, user_key, 2, model=LLAMA_90B, max_tokens=4000).status_code == 402
    job = api.jobs.claim(job_id, utcnow(), timedelta(seconds=60))
    # It finishes having cost far less than its maximum: the cap now counts what was billed.
    assert api.jobs.succeed(
        job_id, job.attempts, utcnow(), text="t", finish_reason="stop",
        prompt_tokens=20, completion_tokens=5,
    )  # fmt: skip
    assert _submit(client, user_key, 3, model=LLAMA_90B, max_tokens=4000).status_code == 202


def test_quota_unset_limits_are_unlimited(client, api, user_key, key_id):
    api.quotas.update(key_id, utcnow(), max_queued=1, requests_per_minute=1)
    api.quotas.update(key_id, utcnow(), max_queued=None, requests_per_minute=None)
    for shade in range(3):
        assert _submit(client, user_key, shade).status_code == 202


def test_quota_free_model_under_zero_cap_still_runs(client, api, user_key, key_id):
    api.quotas.update(key_id, utcnow(), monthly_spend_usd=Decimal(0))
    assert _submit(client, user_key, 1).status_code == 202  # the tiny model is free
    assert _submit(client, user_key, 2, model=LLAMA_90B).status_code == 402


def test_quota_is_checked_with_other_settings_too(redis_server, settings_for):
    # LOUPE_REDIS_URL may point quotas at another Redis database than the broker.
    settings = settings_for(
        broker_url=f"redis://127.0.0.1:{redis_server.port}/0",
        redis_url=f"redis://127.0.0.1:{redis_server.port}/2",
    )
    c = build_test_api(settings)
    try:
        key = new_key(c.keys, "k")
        c.quotas.update(key.id, utcnow(), requests_per_minute=1)
        app = c.client()
        assert _submit(app, key.token, 1).status_code == 202
        assert _submit(app, key.token, 2).status_code == 429
        r = redis.Redis.from_url(settings.redis_url)
        assert r.keys(f"loupe:rate:{key.id}:*")
        r.flushdb()
        r.close()
    finally:
        c.close()


def test_quota_endpoint_shows_limits_and_where_the_key_stands(
    client, api, user_key, other_key, key_id
):
    assert client.get("/v1/quota").status_code == 401
    fresh = client.get("/v1/quota", headers=auth(user_key)).json  # only the default rpm applies
    assert fresh["limits"] == {"monthly_spend_usd": None, "max_queued": None, "max_concurrency": None,
                               "max_running": None, "requests_per_minute": 600}  # fmt: skip
    assert fresh["current"]["available_usd"] is None
    api.quotas.update(
        key_id, utcnow(), monthly_spend_usd=Decimal("5"), max_queued=10, requests_per_minute=100
    )
    finished = _submit(client, user_key, 1, model=LLAMA_90B, max_tokens=100).json["id"]
    job = api.jobs.claim(finished, utcnow(), timedelta(seconds=60))
    assert api.jobs.succeed(
        finished, job.attempts, utcnow(), text="t", finish_reason="stop",
        prompt_tokens=1_000_000, completion_tokens=100_000,
    )  # fmt: skip
    queued = _submit(client, user_key, 2, model=LLAMA_90B, max_tokens=100).json
    _submit(client, other_key, 3)  # another key's job: not counted here
    body = client.get("/v1/quota", headers=auth(user_key)).json
    spent = Decimal(client.get(f"/v1/jobs/{finished}", headers=auth(user_key)).json[
        "usage"]["cost"]["total"])  # fmt: skip
    assert spent == Decimal("0.39") + Decimal("0.0005058")  # the seeds' example, plus the image
    reserved = Decimal(queued["estimated_cost"]["max"])
    current = body["current"]
    assert body["object"] == "quota"
    assert body["limits"]["monthly_spend_usd"] == "5" and body["limits"]["max_queued"] == 10
    assert current["period_start"] == utcnow().date().replace(day=1).isoformat()
    assert Decimal(current["spent_usd"]) == spent
    assert Decimal(current["reserved_usd"]) == reserved
    assert Decimal(current["available_usd"]) == Decimal(5) - spent - reserved
    assert (current["queued"], current["running"]) == (1, 0)
    assert current["requests_this_minute"] == 2  # the two rate-counted submissions; reads don't
