"""GET /v1/jobs/{id}?wait=N and Prefer: wait=N against real SQLite, SeaweedFS and Redis.

No Celery worker here: where a job must finish, a thread plays the pipeline's part through the
real store and the real job events (compare-and-set, then ``events.job_changed``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.settings import Settings
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs
from tests.services.api.pipeline_stand_in import PipelineStandIn
from tests.support.images import make_image

MAX_WAIT = 5


@pytest.fixture
def settings(settings_for) -> Settings:
    return settings_for(
        max_wait_seconds=MAX_WAIT,
        chat_completions_timeout_seconds=3,
    )


def _submit(client: Any, key: str, **headers: str) -> Any:
    return client.post("/v1/jobs", json=chat_body(make_image()), headers={**auth(key), **headers})


@pytest.mark.parametrize("value", ["0", "-1", "61", str(MAX_WAIT + 1), "soon", "nan", "inf", ""])
def test_get_job_rejects_a_bad_wait(client, user_key, value):
    job_id = _submit(client, user_key).json["id"]
    response = client.get(f"/v1/jobs/{job_id}?wait={value}", headers=auth(user_key))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_wait"


def test_get_job_wait_returns_as_soon_as_the_job_finishes(client, api, user_key):
    job_id = _submit(client, user_key).json["id"]
    assert api.waiter is not None and api.waiter.start(timeout=10)
    with PipelineStandIn(api, delay=0.5) as pipeline:
        started = time.monotonic()
        response = client.get(f"/v1/jobs/{job_id}?wait={MAX_WAIT}", headers=auth(user_key))
        returned = time.monotonic()
    assert response.status_code == 200
    assert response.json["status"] == "succeeded"
    assert response.json["output"]["text"] == "a yellow circle"
    assert returned - started >= 0.5  # it really waited for the job...
    assert returned - pipeline.finished[job_id] < 0.5  # ...and answered right after it finished


def test_get_job_wait_answers_the_current_state_at_the_deadline(client, user_key):
    job_id = _submit(client, user_key).json["id"]
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{job_id}?wait=0.5", headers=auth(user_key))
    assert response.status_code == 200
    assert response.json["status"] == "queued"
    assert 0.5 <= time.monotonic() - started < 4


def test_get_job_wait_still_hides_other_keys_jobs(client, user_key, other_key):
    job_id = _submit(client, user_key).json["id"]
    response = client.get(f"/v1/jobs/{job_id}?wait=1", headers=auth(other_key))
    assert response.status_code == 404
    assert client.get("/v1/jobs/job_nope?wait=1", headers=auth(user_key)).status_code == 404


def test_get_job_wait_answers_at_once_when_the_waiter_cap_is_reached(client, api, user_key):
    """Waiting never takes the threads plain requests need: beyond the cap, no wait."""
    job_id = _submit(client, user_key).json["id"]
    assert api.waiter is not None
    held = []
    while (slot := api.waiter.acquire()) is not None:
        held.append(slot)
    assert len(held) == api.settings.max_waiters_per_process == 24
    try:
        started = time.monotonic()
        response = client.get(f"/v1/jobs/{job_id}?wait={MAX_WAIT}", headers=auth(user_key))
        assert time.monotonic() - started < 1
        assert response.status_code == 200
        assert response.json["status"] == "queued"
        prefer = _submit(client, user_key, Prefer=f"wait={MAX_WAIT}")
        assert prefer.status_code == 202
        assert "Preference-Applied" not in prefer.headers
    finally:
        for slot in held:
            slot.release()


def test_prefer_wait_returns_the_finished_job_with_200(client, api, user_key):
    with PipelineStandIn(api):
        response = _submit(client, user_key, Prefer=f"wait={MAX_WAIT}")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "succeeded"
    assert response.json["usage"]["total_tokens"] == 15
    assert response.headers["Preference-Applied"] == f"wait={MAX_WAIT}"
    assert response.headers["Location"] == f"/v1/jobs/{response.json['id']}"


def test_prefer_wait_too_short_returns_202(client, user_key):
    started = time.monotonic()
    response = _submit(client, user_key, Prefer="respond-async, wait=1")
    assert time.monotonic() - started >= 1
    assert response.status_code == 202
    assert response.json["status"] == "queued"
    assert response.headers["Preference-Applied"] == "wait=1"


def test_prefer_wait_is_capped_at_the_maximum(client, api, user_key):
    with PipelineStandIn(api):
        response = _submit(client, user_key, Prefer="wait=3600")
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == f"wait={MAX_WAIT}"


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-1", "wait=", "wait=1.5", "wait=0"])
def test_prefer_wait_malformed_is_ignored(client, api, user_key, prefer):
    """RFC 7240: a preference the server cannot understand is ignored (no 400, no wait: a
    wait it applied would be named in Preference-Applied)."""
    response = _submit(client, user_key, Prefer=prefer)
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers
    assert count_jobs(api.db_engine) == 1


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["wait=10"], 10),
        (['wait="7"'], 7),
        (["respond-async, WAIT=3; foo=bar"], 3),
        (["handling=lenient", "wait=4"], 4),
        (["wait=2, wait=9"], 2),  # the first instance counts
        (["return=minimal"], None),
        (["wait=x1"], None),
    ],
)
def test_parse_prefer_wait(values: list[str], expected: int | None) -> None:
    from services.api.waiting import parse_prefer_wait

    assert parse_prefer_wait(values) == expected
