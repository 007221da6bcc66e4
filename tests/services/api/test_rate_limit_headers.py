"""RateLimit-* headers on every authenticated answer: the key's own per-minute limit, else the
deployment's default."""

from __future__ import annotations

import pytest

from services.auth.keys import Role
from services.clock import utcnow
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import build_test_api

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


def test_a_key_without_a_limit_of_its_own_sees_the_deployments_default(client, api, user_key):
    """Before: a key without a limit got no RateLimit headers at all."""
    assert api.settings.default_requests_per_minute == 600
    for response in (
        client.get("/v1/jobs", headers=auth(user_key)),
        client.get("/v1/jobs/job_nope", headers=auth(user_key)),
        client.post("/v1/jobs", json={"messages": []}, headers=auth(user_key)),
        submit(client, user_key, 1),
    ):
        assert response.headers["RateLimit-Limit"] == "600", response.status_code
        assert response.headers["RateLimit-Policy"] == "600;w=60"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
    assert response.headers["RateLimit-Remaining"] == "599"


def test_no_headers_without_a_key(client):
    for response in (client.get("/v1/jobs"), client.get("/v1/jobs", headers=auth("lp_nope"))):
        assert response.status_code == 401
        assert not set(HEADERS) & set(response.headers.keys())


@pytest.fixture
def default_of(settings_for):
    """An API whose keys without a limit of their own have ``rpm`` per minute (0: none)."""
    built = []

    def build(rpm: int):
        api = build_test_api(settings_for(default_requests_per_minute=rpm))
        built.append(api)
        return api, api.keys.create("carol", Role.USER, utcnow())[1]

    yield build
    for api in built:
        api.close()


def test_the_default_limit_is_enforced_and_a_keys_own_limit_wins(default_of):
    api, key = default_of(2)
    client = api.client()
    assert [submit(client, key, shade).status_code for shade in (1, 2, 3)] == [202, 202, 429]
    quota = client.get("/v1/quota", headers=auth(key)).json
    assert quota["limits"]["requests_per_minute"] == 2
    api.quotas.update(api.keys.authenticate(key).id, utcnow(), requests_per_minute=5)
    assert submit(client, key, 4).headers["RateLimit-Limit"] == "5"


def test_a_default_of_zero_leaves_keys_without_a_limit_unlimited_and_unannounced(default_of):
    api, key = default_of(0)
    client = api.client()
    response = client.get("/v1/jobs", headers=auth(key))
    assert response.status_code == 200
    assert not set(HEADERS) & set(response.headers.keys())
    assert client.get("/v1/quota", headers=auth(key)).json["limits"]["requests_per_minute"] is None
