"""/v1/admin/keys: admins create, list, show, revoke and rotate keys and set their quotas."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from services.auth.keys import Role
from services.clock import timestamp, utcnow
from services.db.schema import api_keys
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.keys import new_key

KEYS = "/v1/admin/keys"


@pytest.fixture
def admin_key(api):
    return new_key(api.keys, "root", Role.ADMIN).token


def create(client, admin_key, **body):
    response = client.post(KEYS, json={"name": "app", **body}, headers=auth(admin_key))
    assert response.status_code == 201, response.json
    return response


def test_key_routes_need_an_admin_key(client, user_key):
    assert client.get(KEYS).status_code == 401
    refused = client.get(KEYS, headers=auth(user_key))
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "admin_required"
    assert client.post(KEYS, json={"name": "x"}, headers=auth(user_key)).status_code == 403


def test_a_created_key_is_shown_once_uncached_and_works(client, admin_key):
    response = create(client, admin_key, role="user")
    body = response.json
    assert body["key"].startswith("lp_")
    assert (body["object"], body["name"], body["role"], body["status"]) == (
        "api_key", "app", "user", "active",
    )  # fmt: skip
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Location"] == f"{KEYS}/{body['id']}"
    assert client.get("/v1/jobs", headers=auth(body["key"])).status_code == 200
    listed = client.get(KEYS, headers=auth(admin_key)).json["data"]
    assert body["id"] in {k["id"] for k in listed}
    assert all("key" not in k and "key_hash" not in k for k in listed)


def test_a_key_shows_its_quota_and_last_use(client, admin_key):
    created = create(client, admin_key).json
    client.get("/v1/jobs", headers=auth(created["key"]))
    shown = client.get(f"{KEYS}/{created['id']}", headers=auth(admin_key)).json
    assert shown["last_used_at"] is not None
    assert shown["quota"]["requests_per_minute"] is None


def test_a_revoked_key_is_refused_on_its_next_request(client, admin_key):
    created = create(client, admin_key).json
    assert client.get("/v1/jobs", headers=auth(created["key"])).status_code == 200
    revoked = client.post(f"{KEYS}/{created['id']}/revoke", headers=auth(admin_key))
    assert revoked.status_code == 200
    assert revoked.json["status"] == "revoked"
    refused = client.get("/v1/jobs", headers=auth(created["key"]))
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "api_key_revoked"


def test_rotation_keeps_the_keys_jobs_and_retires_the_old_secret(client, admin_key):
    created = create(client, admin_key).json
    old = created["key"]
    job = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(old)).json
    rotated = client.post(f"{KEYS}/{created['id']}/rotate", headers=auth(admin_key))
    assert rotated.status_code == 200
    assert rotated.headers["Cache-Control"] == "no-store"
    new = rotated.json["key"]
    assert new != old and rotated.json["id"] == created["id"]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth(new)).status_code == 200
    assert client.get("/v1/jobs", headers=auth(old)).status_code == 401


def test_an_expired_key_is_refused(client, admin_key, api):
    created = create(client, admin_key, expires_at=timestamp(utcnow() + timedelta(hours=1))).json
    assert created["expires_at"] is not None
    with api.db_engine.begin() as conn:  # an hour passes
        past = utcnow() - timedelta(seconds=1)
        conn.execute(update(api_keys).where(api_keys.c.id == created["id"]).values(expires_at=past))
    refused = client.get("/v1/jobs", headers=auth(created["key"]))
    assert refused.json["error"]["code"] == "api_key_expired"


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "a\nb"}, {"name": "x", "role": "root"},
     {"name": "x", "expires_at": "2020-01-01T00:00:00Z"},
     {"name": "x", "expires_at": "2099-01-01T00:00:00"}, {"name": "x", "extra": 1}, []],
)  # fmt: skip
def test_bad_key_bodies_are_422_and_create_nothing(client, admin_key, body):
    before = len(client.get(KEYS, headers=auth(admin_key)).json["data"])
    response = client.post(KEYS, json=body, headers=auth(admin_key))
    assert response.status_code == 422, response.json
    assert set(response.json["error"]) == {"code", "message"}
    assert len(client.get(KEYS, headers=auth(admin_key)).json["data"]) == before


def test_quota_changes_only_what_the_body_names(client, admin_key, user_key, api):
    key_id = api.keys.authenticate(user_key).id
    url = f"{KEYS}/{key_id}/quota"
    first = client.patch(url, json={"requests_per_minute": 60, "monthly_spend_usd": "10.50"},
                         headers=auth(admin_key))  # fmt: skip
    assert first.status_code == 200, first.json
    assert first.json["requests_per_minute"] == 60
    second = client.patch(url, json={"requests_per_minute": None}, headers=auth(admin_key)).json
    assert second["requests_per_minute"] is None
    assert second["monthly_spend_usd"] == "10.5"


@pytest.mark.parametrize(
    "body", [{"max_queued": True}, {"max_queued": -1}, {"max_queued": "5"},
             {"monthly_spend_usd": 10}, {"monthly_spend_usd": "NaN"}, {"rpm": 1}],
)  # fmt: skip
def test_bad_quota_bodies_are_422(client, admin_key, user_key, api, body):
    key_id = api.keys.authenticate(user_key).id
    response = client.patch(f"{KEYS}/{key_id}/quota", json=body, headers=auth(admin_key))
    assert response.status_code == 422, response.json


def test_unknown_keys_are_404(client, admin_key):
    for response in (
        client.get(f"{KEYS}/key_nope", headers=auth(admin_key)),
        client.post(f"{KEYS}/key_nope/revoke", headers=auth(admin_key)),
        client.post(f"{KEYS}/key_nope/rotate", headers=auth(admin_key)),
        client.patch(f"{KEYS}/key_nope/quota", json={"max_queued": 1}, headers=auth(admin_key)),
    ):
        assert response.status_code == 404
        assert response.json["error"]["code"] == "key_not_found"
