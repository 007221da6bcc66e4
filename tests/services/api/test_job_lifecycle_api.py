"""Job options and controls over HTTP: idempotency keys, TTL, priority, listing, queue position."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.clock import utcnow
from services.types import Priority
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, queue_length
from tests.support.images import make_image


def _submit(client, key, body=None, **headers):
    headers = auth(key) | {k.replace("_", "-"): v for k, v in headers.items()}
    return client.post("/v1/jobs", json=body or chat_body(make_image()), headers=headers)


def test_idempotency_key_replay_returns_the_original_job(client, api, settings, user_key):
    first = _submit(client, user_key, Idempotency_Key="order-42")
    again = _submit(client, user_key, Idempotency_Key="order-42")
    assert first.status_code == 202
    assert again.status_code == 200, again.json
    assert again.json["id"] == first.json["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_jobs(api.db_engine) == 1
    assert api.dispatch() == 1 and queue_length(settings.broker_url) == 1


def test_idempotency_key_with_another_body_is_409(client, api, user_key):
    _submit(client, user_key, Idempotency_Key="order-42")
    other = _submit(
        client, user_key, chat_body(make_image(), prompt="Something else"),
        Idempotency_Key="order-42",
    )  # fmt: skip
    assert other.status_code == 409
    assert other.json["error"]["code"] == "idempotency_key_reused"
    assert count_jobs(api.db_engine) == 1


def test_idempotency_keys_are_per_api_key(client, api, user_key, other_key):
    mine = _submit(client, user_key, Idempotency_Key="same")
    theirs = _submit(client, other_key, Idempotency_Key="same")
    assert theirs.status_code == 202 and theirs.json["id"] != mine.json["id"]
    assert count_jobs(api.db_engine) == 2


def test_idempotency_key_expires_after_its_window(client, api, user_key):
    first = _submit(client, user_key, Idempotency_Key="k")
    later = utcnow() + timedelta(seconds=api.settings.idempotency_window_seconds + 1)
    api.job_service._clock = lambda: later  # the window has passed
    again = _submit(client, user_key, Idempotency_Key="k")
    assert again.status_code == 202 and again.json["id"] != first.json["id"]


def test_idempotency_key_must_be_visible_ascii(client, api, user_key):
    response = _submit(client, user_key, Idempotency_Key="x" * 256)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_idempotency_key"
    assert count_jobs(api.db_engine) == 0


def test_ttl_sets_the_queue_deadline(client, user_key):
    response = _submit(client, user_key, chat_body(make_image(), ttl_seconds=30))
    assert response.status_code == 202
    assert response.json["expires_at"] is not None


@pytest.mark.parametrize(
    "extra", [{"ttl_seconds": 0}, {"ttl_seconds": 10**9}, {"priority": "urgent"},
              {"timeout_seconds": 0}],
)  # fmt: skip
def test_bad_lifecycle_options_are_422_and_create_nothing(client, api, user_key, extra):
    response = _submit(client, user_key, chat_body(make_image(), **extra))
    assert response.status_code == 422, response.json
    assert count_jobs(api.db_engine) == 0


def test_multipart_accepts_priority_and_ttl(client, api, user_key):
    import io

    response = client.post(
        "/v1/jobs",
        data={"prompt": "hi", "priority": "high", "ttl_seconds": "60",
              "image": (io.BytesIO(make_image()), "a.png")},
        headers=auth(user_key),
        content_type="multipart/form-data",
    )  # fmt: skip
    assert response.status_code == 202, response.json
    job = api.jobs.get(response.json["id"])
    assert job.priority is Priority.HIGH and job.expires_at is not None


def test_priority_goes_to_its_redis_list(client, api, settings, user_key):
    import redis

    _submit(client, user_key, chat_body(make_image(), priority="high"))
    _submit(client, user_key, chat_body(make_image(), priority="low"))
    _submit(client, user_key, chat_body(make_image()))
    assert api.dispatch() == 3
    r = redis.Redis.from_url(settings.broker_url)
    try:
        assert (r.llen("inference"), r.llen("inference:5"), r.llen("inference:9")) == (1, 1, 1)
    finally:
        r.close()


def test_queued_job_shows_its_place_in_line(client, user_key):
    first = _submit(client, user_key).json
    second = _submit(client, user_key).json
    urgent = _submit(client, user_key, chat_body(make_image(), priority="high")).json
    assert first["queue_position"] == 0
    assert second["queue_position"] == 1
    assert urgent["queue_position"] == 0
    again = client.get(f"/v1/jobs/{second['id']}", headers=auth(user_key)).json
    assert again["queue_position"] == 2  # the high-priority job went ahead
    assert again["priority"] == "normal"
    # No job finished recently: no throughput to estimate from.
    assert again["estimated_start_seconds"] is None


def test_list_jobs_pages_and_filters(client, user_key, other_key):
    ids = [
        _submit(client, user_key, chat_body(make_image(), metadata={"batch": str(i % 2)})).json[
            "id"
        ]
        for i in range(5)
    ]
    _submit(client, other_key)
    page = client.get("/v1/jobs?limit=2", headers=auth(user_key)).json
    assert page["object"] == "list" and page["has_more"] is True
    assert [j["id"] for j in page["data"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["data"]]
    while page["has_more"]:
        page = client.get(
            f"/v1/jobs?limit=2&cursor={page['next_cursor']}", headers=auth(user_key)
        ).json
        seen += [j["id"] for j in page["data"]]
    assert seen == ids[::-1]
    batch = client.get("/v1/jobs?metadata[batch]=1", headers=auth(user_key)).json
    assert [j["id"] for j in batch["data"]] == [ids[3], ids[1]]
    queued = client.get("/v1/jobs?status=queued,running&model=loupe-tiny-mllama",
                        headers=auth(user_key)).json  # fmt: skip
    assert len(queued["data"]) == 5
    none = client.get("/v1/jobs?status=succeeded", headers=auth(user_key)).json
    assert none["data"] == [] and none["has_more"] is False and none["next_cursor"] is None
    future = client.get("/v1/jobs?created_after=2999-01-01T00:00:00Z", headers=auth(user_key))
    assert future.json["data"] == []


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "limit=0", "limit=101", "cursor=notacursor", "created_after=yesterday",
     "created_after=2026-01-01T00:00:00", "colour=blue",
     # Found by schemathesis: pydantic alone read these as times (0.5 s after 1970).
     "created_before=0.5", "created_after=1700000000", "created_after=2026-01-01 00:00:00Z",
     # Found by schemathesis: these keys broke SQLite's JSON path (a 503, not a 422).
     "metadata%5Ba%00%5D=x", 'metadata%5Ba"b%5D=x', "metadata%5Ba%5Cb%5D=x",
     "metadata%5Ba%5D=" + "x" * 513, "status=", "status=queued,",
     "model=a&model=b", "metadata%5Ba%5D=1&metadata%5Ba%5D=2", "limit=1&limit=2"],
)  # fmt: skip
def test_list_jobs_rejects_bad_queries(client, user_key, query):
    response = client.get(f"/v1/jobs?{query}", headers=auth(user_key))
    assert response.status_code == 422, response.json
    assert "error" in response.json


def test_list_jobs_needs_a_key(client):
    assert client.get("/v1/jobs").status_code == 401
