"""/v1/webhook-secret and /v1/jobs/{id}/webhook-deliveries, with loopback allowlisted."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest

from services.clock import utcnow
from tests.conftest import auth
from tests.helpers import chat_body, queue_length
from tests.support.images import make_image


@pytest.fixture
def settings(settings_for):
    return settings_for(
        webhook_allowed_networks="127.0.0.0/8",
        webhook_allow_http="true",
        webhook_secret_overlap_seconds=3600,
    )


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_webhook_secret_is_per_key_stable_and_whsec(client, user_key, other_key):
    first = client.get("/v1/webhook-secret", headers=auth(user_key))
    assert first.status_code == 200
    assert first.json["secret"].startswith("whsec_")
    assert first.json["previous_secret"] is None
    again = client.get("/v1/webhook-secret", headers=auth(user_key)).json
    assert again["secret"] == first.json["secret"]
    other = client.get("/v1/webhook-secret", headers=auth(other_key)).json
    assert other["secret"] != first.json["secret"]


def test_webhook_secret_needs_a_key(client):
    response = client.get("/v1/webhook-secret")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "missing_api_key"


def test_rotate_keeps_the_previous_secret_for_the_overlap(client, user_key):
    old = client.get("/v1/webhook-secret", headers=auth(user_key)).json["secret"]
    before = utcnow()
    rotated = client.post("/v1/webhook-secret/rotate", headers=auth(user_key))
    assert rotated.status_code == 200
    body = rotated.json
    assert body["secret"].startswith("whsec_") and body["secret"] != old
    assert body["previous_secret"] == old
    expires = _parse(body["previous_secret_expires_at"])
    assert before + timedelta(seconds=3590) < expires < utcnow() + timedelta(seconds=3610)
    assert client.get("/v1/webhook-secret", headers=auth(user_key)).json == body


def test_rotate_without_a_secret_yet_creates_one_then_rotates(client, user_key):
    body = client.post("/v1/webhook-secret/rotate", headers=auth(user_key)).json
    assert body["previous_secret"].startswith("whsec_")
    assert body["secret"] != body["previous_secret"]


def test_submit_multipart_with_webhook_and_filter(client, api, user_key):
    response = client.post(
        "/v1/jobs",
        data={
            "image": (io.BytesIO(make_image()), "a.png"),
            "prompt": "hi",
            "webhook": "http://127.0.0.1:9/hook",
            "webhook_events_filter": ["start", "completed"],
        },
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    assert response.json["webhook"] == "http://127.0.0.1:9/hook"
    assert response.json["webhook_events_filter"] == ["start", "completed"]
    assert api.jobs.get(response.json["id"]).webhook_events == ("start", "completed")


def test_deliveries_of_a_job_without_webhook_are_empty_and_redeliver_is_409(
    client, user_key, other_key
):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    listed = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth(user_key))
    assert listed.status_code == 200
    assert listed.json == {"object": "list", "data": []}
    again = client.post(f"/v1/jobs/{job_id}/webhook-deliveries/redeliver", headers=auth(user_key))
    assert again.status_code == 409
    assert again.json["error"]["code"] == "no_webhook_events"
    hidden = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth(other_key))
    assert hidden.status_code == 404
    hidden = client.post(f"/v1/jobs/{job_id}/webhook-deliveries/redeliver", headers=auth(other_key))
    assert hidden.status_code == 404


def test_canceling_a_queued_job_enqueues_its_completed_webhook(client, api, settings, user_key):
    body = chat_body(make_image(), webhook="http://127.0.0.1:9/hook")
    job_id = client.post("/v1/jobs", json=body, headers=auth(user_key)).json["id"]
    canceled = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(user_key))
    assert canceled.json["status"] == "canceled"

    # One delivery message on the webhooks queue (the inference message is still queued).
    assert queue_length(settings.broker_url, "webhooks") == 1
    listed = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth(user_key)).json
    (event,) = listed["data"]
    assert event["id"].startswith("msg_")
    assert event["type"] == "job.completed"
    assert event["status"] == "pending"
    assert event["attempts"] == []
    stored = api.webhook_store.get_event(event["id"])
    assert stored.payload["type"] == "job.completed"
    assert stored.payload["data"] == canceled.json

    again = client.post(f"/v1/jobs/{job_id}/webhook-deliveries/redeliver", headers=auth(user_key))
    assert again.status_code == 202
    assert again.json["id"] == event["id"]
    assert queue_length(settings.broker_url, "webhooks") == 2
