"""RateLimit-* headers on the authenticated answers of a key with a per-minute limit."""

from __future__ import annotations

import pytest

from services.clock import utcnow
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image

HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")


@pytest.fixture
def limited_key(api, user_key) -> str:
    api.quotas.update(api.keys.authenticate(user_key).id, utcnow(), requests_per_minute=2)
    return user_key


def submit(client, key: str, shade: int):
    return client.post("/v1/jobs", json=chat_body(make_image(64 + shade)), headers=auth(key))


def test_a_limited_key_sees_its_window_on_every_answer(client, limited_key):
    response = client.get("/v1/jobs", headers=auth(limited_key))
    assert response.headers["RateLimit-Limit"] == "2"
    assert response.headers["RateLimit-Remaining"] == "2"
    assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
    assert response.headers["RateLimit-Policy"] == "2;w=60"
    missing = client.get("/v1/jobs/job_nope", headers=auth(limited_key))
    assert missing.status_code == 404 and missing.headers["RateLimit-Limit"] == "2"


def test_each_submission_counts_down_and_the_429_says_zero(client, limited_key):
    assert submit(client, limited_key, 1).headers["RateLimit-Remaining"] == "1"
    assert submit(client, limited_key, 2).headers["RateLimit-Remaining"] == "0"
    refused = submit(client, limited_key, 3)
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) >= 1


def test_no_headers_without_a_limit_or_without_a_key(client, user_key):
    for response in (client.get("/v1/jobs", headers=auth(user_key)), client.get("/v1/jobs")):
        assert not set(HEADERS) & set(response.headers.keys())
