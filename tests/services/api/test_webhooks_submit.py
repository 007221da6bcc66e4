"""Job webhook options at submit, under the default (strict) SSRF settings: 422, nothing created."""

from __future__ import annotations

import io

import pytest

from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.support.images import make_image


def _assert_nothing_created(api, settings, s3):
    assert count_jobs(api.db_engine) == 0
    assert count_objects(s3, settings.s3_bucket) == 0
    assert queue_length(settings.broker_url) == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://[::1]/hook",
        "https://10.0.0.7/hook",
        "https://192.168.1.20/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:10.0.0.1]/hook",
        "https://100.64.0.1/hook",
        "http://93.184.215.14/hook",  # plain http is refused unless allowed
    ],
)
def test_submit_refuses_internal_or_plain_http_webhooks(
    client, api, settings, s3_server, user_key, url
):
    body = chat_body(make_image(), webhook=url)
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_webhook_url"
    _assert_nothing_created(api, settings, s3_server)


def test_submit_multipart_refuses_loopback_webhook(client, api, settings, s3_server, user_key):
    response = client.post(
        "/v1/jobs",
        data={
            "image": (io.BytesIO(make_image()), "a.png"),
            "prompt": "hi",
            "webhook": "https://127.0.0.1:9/x",
        },
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_webhook_url"
    _assert_nothing_created(api, settings, s3_server)


@pytest.mark.parametrize(
    "extra",
    [
        {"webhook_events_filter": ["completed"]},  # a filter needs a webhook
        {"webhook": "https://93.184.215.14/h", "webhook_events_filter": ["finished"]},
        {"webhook": "https://93.184.215.14/h", "webhook_events_filter": []},
        {"webhook": ""},
    ],
)
def test_submit_refuses_bad_webhook_options(client, api, settings, s3_server, user_key, extra):
    response = client.post(
        "/v1/jobs", json=chat_body(make_image(), **extra), headers=auth(user_key)
    )
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_parameter"
    _assert_nothing_created(api, settings, s3_server)


def test_submit_accepts_a_public_https_webhook_and_shows_it(client, api, user_key):
    body = chat_body(make_image(), webhook="https://93.184.215.14/hook")
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert response.status_code == 202, response.json
    assert response.json["webhook"] == "https://93.184.215.14/hook"
    assert response.json["webhook_events_filter"] == ["completed"]
    job = api.jobs.get(response.json["id"])
    assert job.webhook_url == "https://93.184.215.14/hook"
    assert job.webhook_events == ("completed",)


def test_submit_without_webhook_shows_none(client, user_key):
    response = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key))
    assert response.status_code == 202
    assert response.json["webhook"] is None
