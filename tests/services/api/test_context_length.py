"""A job whose prompt cannot fit the model's context beside the tokens it asks for is refused at
submit, through every door that creates jobs, before anything is stored or queued."""

from __future__ import annotations

import io
from typing import Any

import pytest

from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.support.images import make_image

# 3001 tokens of the tiny model's tokenizer; its context is 4096 tokens.
LONG = "word " * 1000
# 4201 tokens: past the context on its own.
TOO_LONG = "word " * 1400


def _assert_nothing_created(api: Any, settings: Any, s3: Any) -> None:
    assert count_jobs(api.db_engine) == 0
    assert count_objects(s3, settings.s3_bucket) == 0
    assert queue_length(settings.broker_url) == 0


def _multipart(prompt: str, **fields: str) -> dict[str, Any]:
    return {"image": (io.BytesIO(make_image()), "a.png"), "prompt": prompt, **fields}


def _refused(response: Any) -> bool:
    return response.status_code == 422 and (
        response.json["error"]["code"] == "context_length_exceeded"
    )


@pytest.mark.parametrize(("prompt", "max_tokens"), [(LONG, 2048), (TOO_LONG, None), (TOO_LONG, 1)])
def test_a_job_past_the_context_is_422_and_creates_nothing(
    client, api, settings, s3_server, user_key, prompt, max_tokens
):
    """Before: 202, and the job failed at the worker (or ran with its answer cut short)."""
    body = chat_body(make_image(), prompt=prompt)
    body.pop("max_tokens")
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert _refused(response), response.json
    assert "4096" in response.json["error"]["message"]
    _assert_nothing_created(api, settings, s3_server)


def test_a_long_prompt_with_room_for_its_answer_is_accepted(client, user_key):
    for extra in ({"max_tokens": 64}, {}):
        body = chat_body(make_image(), prompt=LONG) | extra
        if not extra:
            body.pop("max_tokens")  # the model's default, which the engine cuts to fit
        response = client.post("/v1/jobs", json=body, headers=auth(user_key))
        assert response.status_code == 202, response.json


def test_multipart_is_refused_too(client, api, settings, s3_server, user_key):
    response = client.post(
        "/v1/jobs",
        data=_multipart(LONG, max_tokens="2048"),
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert _refused(response), response.json
    _assert_nothing_created(api, settings, s3_server)


def test_chat_completions_is_refused_too(client, api, settings, s3_server, user_key):
    body = chat_body(make_image(), prompt=LONG, max_tokens=2048)
    response = client.post("/v1/chat/completions", json=body, headers=auth(user_key))
    assert _refused(response), response.json
    _assert_nothing_created(api, settings, s3_server)


@pytest.mark.parametrize("text", ["word " * 2_000_000, " " * 10_000_000])
def test_a_10_mb_prompt_is_refused(client, api, settings, s3_server, user_key, text):
    """Before: the tokenizer read it all (15 s of CPU for words, 202), or panicked on the spaces
    (pyo3's PanicException is not an Exception: no JSON answer at all)."""
    body = chat_body(make_image(), prompt=text)
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert _refused(response), response.json
    _assert_nothing_created(api, settings, s3_server)
