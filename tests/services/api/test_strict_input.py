"""Strict types and clean strings at submit, the same on JSON and multipart; list queries that
overflow. Every case is a 4xx that creates nothing."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.support.images import make_image

PUBLIC_HOOK = "https://93.184.215.14/hook"  # a public address literal: no DNS, passes the guard


def _assert_nothing_created(api, settings, s3) -> None:
    assert count_jobs(api.db_engine) == 0
    assert count_objects(s3, settings.s3_bucket) == 0
    assert queue_length(settings.broker_url) == 0


def _schema_format(schema: Any, **spec: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, **spec}}


def _with_message(**fields: Any) -> dict[str, Any]:
    body = chat_body(make_image())
    body["messages"][0].update(fields)
    return body


NOT_NUMBERS = [
    ("max_tokens", True),
    ("max_tokens", "5"),
    ("max_completion_tokens", False),
    ("temperature", True),
    ("top_p", True),
    ("top_k", True),
    ("seed", False),
    ("timeout_seconds", True),
    ("ttl_seconds", True),
    ("presence_penalty", True),
    ("n", True),
    ("ignore_eos", 1),
    ("stream", 0),
]


@pytest.mark.parametrize(
    ("field", "value"), NOT_NUMBERS, ids=[f"{f}={v!r}" for f, v in NOT_NUMBERS]
)
def test_json_numbers_must_be_numbers_and_flags_flags(
    client, api, settings, s3_server, user_key, field: str, value: Any
) -> None:
    response = client.post(
        "/v1/jobs", json=chat_body(make_image(), **{field: value}), headers=auth(user_key)
    )
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_parameter"
    assert field in response.json["error"]["message"]
    _assert_nothing_created(api, settings, s3_server)


def test_a_json_schema_strict_flag_must_be_a_bool(client, user_key) -> None:
    body = chat_body(make_image(), response_format=_schema_format({}, strict=1))
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert (response.status_code, response.json["error"]["code"]) == (422, "invalid_parameter")


UNCLEAN = {
    "lone surrogate in the prompt": chat_body(make_image(), prompt="hi \ud800 there"),
    "NUL in the prompt": chat_body(make_image(), prompt="hi \x00 there"),
    "escape in a system message": chat_body(make_image())
    | {"messages": [{"role": "system", "content": "\x1b[2J"}, *chat_body()["messages"]]},
    "CR LF in a metadata key": chat_body(make_image(), metadata={"a\r\nb": "v"}),
    "newline in a metadata value": chat_body(make_image(), metadata={"k": "one\ntwo"}),
    "surrogate in a metadata value": chat_body(make_image(), metadata={"k": "\udfff"}),
    "CR LF in a webhook URL": chat_body(make_image(), webhook=PUBLIC_HOOK + "\r\nX-Evil: 1"),
    "surrogate in a webhook URL": chat_body(make_image(), webhook=PUBLIC_HOOK + "\ud83d"),
    "C1 control in the model": chat_body(make_image(), model="loupe-tiny-mllama\x85"),
    "tab in a message name": _with_message(name="ali\tce"),
    "NUL in user": chat_body(make_image(), user="u\x00"),
    "NUL in a stop sequence": chat_body(make_image(), stop=["\x00"]),
    "surrogate deep in a json_schema": chat_body(
        make_image(), response_format=_schema_format({"properties": {"a": {"title": "\ud800"}}})
    ),
    "NUL in a json_schema key": chat_body(
        make_image(), response_format=_schema_format({"properties": {"a\x00": {}}})
    ),
    "DEL in a file id": _with_message(
        content=[
            {"type": "image_file", "image_file": {"file_id": "file_\x7f"}},
            {"type": "text", "text": "describe"},
        ]
    ),
}


@pytest.mark.parametrize("body", UNCLEAN.values(), ids=UNCLEAN.keys())
def test_control_characters_and_lone_surrogates_are_422_on_json(
    client, api, settings, s3_server, user_key, body: dict[str, Any]
) -> None:
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_parameter"
    _assert_nothing_created(api, settings, s3_server)


def test_tab_cr_and_lf_stay_allowed_in_prompt_text_and_stops(client, api, user_key) -> None:
    body = chat_body(make_image(), prompt="line one\r\n\tline two", stop=["\n"])
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert response.status_code == 202, response.json
    job = api.jobs.get(response.json["id"])
    assert job.messages[0].content[1].text == "line one\r\n\tline two"


def _form(**fields: Any) -> dict[str, Any]:
    return {"image": (io.BytesIO(make_image()), "a.png"), "prompt": "hi", **fields}


UNCLEAN_FORMS = {
    "NUL in the prompt": _form(prompt="a\x00b"),
    "escape in the system prompt": _form(system="\x1b[2J"),
    "CR LF in a webhook URL": _form(webhook=PUBLIC_HOOK + "\r\nX-Evil: 1"),
    "NUL in the model": _form(model="loupe-tiny-mllama\x00"),
    "max_tokens true": _form(max_tokens="true"),
    "temperature nan": _form(temperature="nan"),
    "top_k 1.5": _form(top_k="1.5"),
    "non-ASCII digits": _form(max_tokens="\u0665"),
    "ignore_eos maybe": _form(ignore_eos="maybe"),
}


@pytest.mark.parametrize("form", UNCLEAN_FORMS.values(), ids=UNCLEAN_FORMS.keys())
def test_the_same_rules_hold_on_multipart(
    client, api, settings, s3_server, user_key, form: dict[str, Any]
) -> None:
    response = client.post(
        "/v1/jobs", data=form, headers=auth(user_key), content_type="multipart/form-data"
    )
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_parameter"
    _assert_nothing_created(api, settings, s3_server)


def test_multipart_fields_are_text_that_parses_to_their_types(client, api, user_key) -> None:
    form = _form(max_tokens="7", temperature="0.5", top_k="-1", ignore_eos="true", seed="3")
    response = client.post(
        "/v1/jobs", data=form, headers=auth(user_key), content_type="multipart/form-data"
    )
    assert response.status_code == 202, response.json
    params = api.jobs.get(response.json["id"]).params
    assert (params.max_tokens, params.temperature, params.top_k) == (7, 0.5, -1)
    assert (params.ignore_eos, params.seed) == (True, 3)


def test_a_control_character_in_the_idempotency_key_is_422(client, user_key) -> None:
    headers = {**auth(user_key), "Idempotency-Key": "key\x01"}
    response = client.post("/v1/jobs", json=chat_body(make_image()), headers=headers)
    assert (response.status_code, response.json["error"]["code"]) == (
        422,
        "invalid_idempotency_key",
    )


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("created_after=0001-01-01T00:00:00%2B14:00", "invalid_parameter"),
        ("created_before=9999-12-31T23:59:59-14:00", "invalid_parameter"),
        ("cursor=" + _cursor(json.dumps({"t": "0001-01-01T00:00:00+14:00", "id": "j"})), "invalid_cursor"),
        ("cursor=" + _cursor("[" * 10_000 + "]" * 10_000), "invalid_cursor"),
        ("cursor=" + _cursor("[" * 65 + "]" * 65), "invalid_cursor"),
        ("cursor=", "invalid_cursor"),
    ],
    ids=["created_after-underflow", "created_before-overflow", "cursor-underflow", "cursor-deep",
         "cursor-a-list", "cursor-empty"],
)  # fmt: skip
def test_list_queries_that_overflow_or_nest_are_422(
    client, user_key, query: str, code: str
) -> None:
    response = client.get(f"/v1/jobs?{query}", headers=auth(user_key))
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == code
