"""JSON request bodies: parsed once, with a nesting limit, before any schema sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.api.body import MAX_JSON_DEPTH, loads_json
from services.errors import BadRequest
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects
from tests.support.images import make_image


def _nested(depth: int) -> str:
    """A JSON text of ``depth`` nested arrays."""
    return "[" * depth + "]" * depth


def _job_with(text_at: str, depth: int) -> str:
    """A job body (as JSON text) with ``depth`` nested arrays at one place in it."""
    marker = "__deep__"
    placements: dict[str, dict[str, Any]] = {
        "root": {"extra": marker},
        "metadata": {"metadata": {"k": marker}},
        "json_schema": {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"enum": marker}},
            }
        },
    }
    body = json.dumps(chat_body(make_image(), **placements[text_at]))
    return body.replace(json.dumps(marker), _nested(depth))


def test_a_body_at_the_limit_parses() -> None:
    assert loads_json(_nested(MAX_JSON_DEPTH)) == json.loads(_nested(MAX_JSON_DEPTH))


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 10_000, 100_000])
def test_a_body_past_the_limit_is_a_400(depth: int) -> None:
    with pytest.raises(BadRequest) as caught:
        loads_json(_nested(depth).encode())
    assert caught.value.code == "invalid_json"
    assert str(MAX_JSON_DEPTH) in caught.value.message


@pytest.mark.parametrize("text", ["{nope", "\xff", "[NaN]", '{"a": Infinity}', ""])
def test_text_that_is_not_json_is_a_400(text: str) -> None:
    with pytest.raises(BadRequest) as caught:
        loads_json(text.encode("latin-1"))
    assert caught.value.code == "invalid_json"


@pytest.mark.parametrize("where", ["root", "metadata", "json_schema"])
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/chat/completions"])
def test_deep_json_anywhere_in_a_job_is_a_400_that_creates_nothing(
    client, api, settings, s3_server, user_key, where: str, path: str
) -> None:
    response = client.post(
        path, data=_job_with(where, 10_000), content_type="application/json", headers=auth(user_key)
    )
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_json"
    assert count_jobs(api.db_engine) == 0
    assert count_objects(s3_server, settings.s3_bucket) == 0


def test_a_json_schema_within_the_limit_is_accepted(client, user_key) -> None:
    response = client.post(
        "/v1/jobs",
        data=_job_with("json_schema", 3),
        content_type="application/json",
        headers=auth(user_key),
    )
    # The tiny model's engine has no structured output: refused by the engine check, not the parser.
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "unsupported_parameter"
