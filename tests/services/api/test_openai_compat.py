"""POST /v1/chat/completions against real SQLite, SeaweedFS and Redis, with the official client.

The ``openai`` client talks to the Flask app in-process (httpx's WSGI transport); the e2e tier
runs it against gunicorn and a real Celery worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from services.api.app import create_app
from services.settings import Settings
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.services.api.pipeline_stand_in import PipelineStandIn
from tests.support.images import data_url, make_image
from tests.support.roots import ApiUnderTest

CHAT_TIMEOUT = 2


@pytest.fixture
def settings(settings_for) -> Settings:
    return settings_for(
        chat_completions_timeout_seconds=CHAT_TIMEOUT,
    )


@pytest.fixture
def openai_client(api: ApiUnderTest, user_key: str) -> Iterator[openai.OpenAI]:
    app = create_app(api.root)
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://loupe.test")
    client = openai.OpenAI(base_url="http://loupe.test/v1", api_key=user_key, http_client=http)
    yield client
    client.close()


def _messages(prompt: str = "What is this?") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": data_url(make_image())}},
            ],
        }
    ]


def test_chat_completion_with_the_openai_client(openai_client, api):
    with PipelineStandIn(api, finish_reason="length"):
        completion = openai_client.chat.completions.create(
            model="loupe-tiny-mllama", messages=_messages(), max_tokens=8
        )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-job_")
    assert completion.model == "loupe-tiny-mllama"
    assert abs(completion.created - time.time()) < 60
    (choice,) = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "a yellow circle"
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 4)
    assert completion.usage.total_tokens == 15
    # The job behind it is a normal job: stored, queued once, visible through /v1/jobs.
    extension = completion.model_extra["loupe"]  # type: ignore[index]
    job = api.jobs.get(extension["job_id"])
    assert completion.id == "chatcmpl-" + job.id
    assert job.status.value == "succeeded" and len(job.images) == 1
    assert job.params.max_tokens == 8
    assert extension["cost"]["currency"] == "USD"
    assert count_jobs(api.db_engine) == 1


def test_chat_completion_maps_stop_and_plain_string_content(client, api, user_key):
    body = {"model": "loupe-tiny-mllama", "messages": [{"role": "user", "content": "Hello"}]}
    with PipelineStandIn(api):
        response = client.post("/v1/chat/completions", json=body, headers=auth(user_key))
    assert response.status_code == 200, response.json
    assert response.json["choices"][0]["finish_reason"] == "stop"
    assert response.json["loupe"]["images"] == 0


def test_chat_completion_timeout_is_504_with_the_job_to_poll(openai_client, client, api, user_key):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        openai_client.chat.completions.create(
            model="loupe-tiny-mllama", messages=_messages(), max_tokens=8
        )
    assert CHAT_TIMEOUT <= time.monotonic() - started < CHAT_TIMEOUT + 5
    response = raised.value.response
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "wait_timeout"
    job_id = error["job_id"]
    assert job_id in error["message"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    # No client retry (x-should-retry: false): one job, and it is still there to poll.
    assert count_jobs(api.db_engine) == 1
    polled = client.get(response.headers["Location"], headers=auth(user_key))
    assert polled.status_code == 200 and polled.json["status"] == "queued"


@pytest.mark.parametrize(
    ("error_code", "status", "kind"),
    [("engine_error", 502, "server_error"), ("invalid_image", 422, "invalid_request_error")],
)
def test_chat_completion_failed_job_is_an_error_with_its_job_id(
    client, api, user_key, error_code, status, kind
):
    with PipelineStandIn(api, error_code=error_code):
        response = client.post("/v1/chat/completions", json=chat_body(), headers=auth(user_key))
    assert response.status_code == status
    error = response.json["error"]
    assert (error["code"], error["type"], error["message"]) == (error_code, kind, "it broke")
    assert api.jobs.get(error["job_id"]).status.value == "failed"
    assert response.headers["x-should-retry"] == "false"


def test_chat_completion_canceled_job_is_409(client, api, user_key):
    with PipelineStandIn(api, cancel=True):
        response = client.post("/v1/chat/completions", json=chat_body(), headers=auth(user_key))
    assert response.status_code == 409
    assert response.json["error"]["code"] == "canceled"
    assert response.json["error"]["job_id"].startswith("job_")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (chat_body(stream=True), 422, "unsupported_parameter"),
        (chat_body(n=2), 422, "invalid_parameter"),
        ({"model": "loupe-tiny-mllama", "messages": []}, 422, "invalid_parameter"),
        (chat_body(model="gpt-9"), 422, None),
        ([1, 2], 400, "invalid_json"),
    ],
)
def test_chat_completion_bad_input_creates_nothing(
    client, api, settings, s3_server, user_key, body, status, code
):
    response = client.post("/v1/chat/completions", json=body, headers=auth(user_key))
    assert response.status_code == status, response.json
    if code is not None:
        assert response.json["error"]["code"] == code
    assert count_jobs(api.db_engine) == 0
    assert count_objects(s3_server, settings.s3_bucket) == 0
    assert queue_length(settings.broker_url) == 0


def test_chat_completion_needs_json_and_a_key(client, user_key):
    assert client.post("/v1/chat/completions", json=chat_body()).status_code == 401
    response = client.post(
        "/v1/chat/completions", data="x", content_type="text/plain", headers=auth(user_key)
    )
    assert response.status_code == 415
    response = client.post(
        "/v1/chat/completions",
        data="{nope",
        content_type="application/json",
        headers=auth(user_key),
    )
    assert response.status_code == 400


def test_chat_completion_without_a_free_waiter_is_503_and_creates_nothing(client, api, user_key):
    assert api.waiter is not None
    held = []
    while (slot := api.waiter.acquire()) is not None:
        held.append(slot)
    try:
        response = client.post("/v1/chat/completions", json=chat_body(), headers=auth(user_key))
    finally:
        for slot in held:
            slot.release()
    assert response.status_code == 503
    assert response.json["error"]["code"] == "too_many_waiters"
    assert response.headers["Retry-After"]
    assert count_jobs(api.db_engine) == 0
