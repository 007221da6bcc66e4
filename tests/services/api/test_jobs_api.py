"""POST/GET /v1/jobs against real SQLite, real SeaweedFS and a real Redis broker."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest

from services.catalog.registry import build_registry
from services.clock import utcnow
from services.settings import Settings
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.support.images import data_url, make_image
from tests.support.keys import new_key
from tests.support.roots import ApiUnderTest, build_test_api


def _assert_nothing_created(api: ApiUnderTest, settings: Settings, s3: Any) -> None:
    assert count_jobs(api.db_engine) == 0
    assert count_objects(s3, settings.s3_bucket) == 0
    assert api.dispatch() == 0 and queue_length(settings.broker_url) == 0


def test_create_job_json_returns_202_and_stores_everything(
    client, api, settings, s3_server, user_key
):
    image = make_image()
    response = client.post(
        "/v1/jobs",
        json=chat_body(image, temperature=0, seed=7, stop=["\n"]),
        headers=auth(user_key),
    )
    assert response.status_code == 202, response.json
    body = response.json
    assert response.headers["Location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == "queued"
    assert body["model"] == "loupe-tiny-mllama"
    assert body["output"] is None and body["usage"] is None and body["error"] is None
    assert count_jobs(api.db_engine) == 1
    assert count_objects(s3_server, settings.s3_bucket) == 1
    assert queue_length(settings.broker_url) == 0  # committed; the dispatcher hands it out
    assert api.dispatch() == 1 and queue_length(settings.broker_url) == 1
    job = api.jobs.get(body["id"])
    assert job.params.max_tokens == 8 and job.params.seed == 7 and job.params.stop == ("\n",)
    assert len(job.images) == 1 and job.images[0].width == 64


def test_create_job_accepts_ignore_eos_and_text_format(client, api, user_key):
    body = chat_body(make_image(), ignore_eos=True, response_format={"type": "text"})
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert response.status_code == 202, response.json
    job = api.jobs.get(response.json["id"])
    assert job.params.ignore_eos is True
    assert job.params.response_format is None


def test_create_job_multipart_returns_202(client, api, settings, user_key):
    response = client.post(
        "/v1/jobs",
        data={
            "image": (io.BytesIO(make_image(fmt="JPEG")), "cat.jpg"),
            "prompt": "What is this?",
            "max_tokens": "5",
            "temperature": "0.5",
            "stop": ["a", "b"],
        },
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    job = api.jobs.get(response.json["id"])
    assert job.model == build_registry(settings).default_model
    assert job.params.max_tokens == 5 and job.params.temperature == 0.5
    assert job.params.stop == ("a", "b")
    assert [p.type for p in job.messages[0].content] == ["image", "text"]
    assert job.images[0].content_type == "image/jpeg"
    assert api.dispatch() == 1 and queue_length(settings.broker_url) == 1


def test_same_image_is_stored_once(client, api, settings, s3_server, user_key):
    image = make_image()
    for _ in range(2):
        assert (
            client.post("/v1/jobs", json=chat_body(image), headers=auth(user_key)).status_code
            == 202
        )
    assert count_jobs(api.db_engine) == 2
    assert count_objects(s3_server, settings.s3_bucket) == 1


def test_get_job_returns_own_job(client, user_key):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    response = client.get(f"/v1/jobs/{job_id}", headers=auth(user_key))
    assert response.status_code == 200
    assert response.json["id"] == job_id
    assert set(response.json) >= {
        "id", "status", "model", "created_at", "started_at", "completed_at",
        "output", "usage", "metrics", "error",
    }  # fmt: skip


def test_get_job_of_another_key_is_404(client, user_key, other_key):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    response = client.get(f"/v1/jobs/{job_id}", headers=auth(other_key))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "job_not_found"
    assert client.get("/v1/jobs/job_missing", headers=auth(user_key)).status_code == 404


def _truncated_png() -> bytes:
    data = make_image(400, 300)
    return data[: len(data) // 2]


def _too_many_pixels() -> bytes:
    return make_image(1100, 1000)  # 1.1 Mpx > the 1 Mpx test limit


def _too_large() -> bytes:
    return make_image(600, 600, fmt="BMP")  # ~1 MB > the 200 kB test limit


BAD_JSON_BODIES: list[tuple[str, Any, int, str]] = [
    ("not an image", chat_body(b"hello, not an image"), 415, "unsupported_image_format"),
    ("truncated image", chat_body(_truncated_png()), 422, "invalid_image"),
    ("too many pixels", chat_body(_too_many_pixels()), 422, "image_too_many_pixels"),
    ("too large", chat_body(_too_large()), 413, "image_too_large"),
    (
        "gif not allowed? no: tiff",
        chat_body(make_image(fmt="TIFF")),
        415,
        "unsupported_image_format",
    ),
    (
        "too many images",
        {
            "model": "loupe-tiny-mllama",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(make_image())}},
                        {"type": "image_url", "image_url": {"url": data_url(make_image(32, 32))}},
                        {"type": "text", "text": "compare"},
                    ],
                }
            ],
        },
        422,
        "too_many_images",
    ),
    ("unknown model", chat_body(make_image(), model="gpt-9"), 422, "model_not_found"),
    ("temperature > 2", chat_body(make_image(), temperature=3), 422, "invalid_parameter"),
    ("negative max_tokens", chat_body(make_image(), max_tokens=-1), 422, "invalid_parameter"),
    ("max_tokens over limit", chat_body(make_image(), max_tokens=100000), 422, "invalid_parameter"),
    ("top_p 0", chat_body(make_image(), top_p=0), 422, "invalid_parameter"),
    ("string seed", chat_body(make_image(), seed="abc"), 422, "invalid_parameter"),
    (
        "five stops",
        chat_body(make_image(), stop=["a", "b", "c", "d", "e"]),
        422,
        "invalid_parameter",
    ),
    ("unknown field", chat_body(make_image(), best_of=3), 422, "invalid_parameter"),
    ("n > 1", chat_body(make_image(), n=2), 422, "invalid_parameter"),
    ("no messages", {"model": "loupe-tiny-mllama", "messages": []}, 422, "invalid_parameter"),
    ("body is a list", [1, 2], 400, "invalid_json"),
    (
        "remote url on a private address",
        chat_body(None)
        | {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://10.1.2.3/a.png"}}
                    ],
                }
            ]
        },
        422,
        "invalid_image_url",
    ),
    (
        "bad base64",
        chat_body(None)
        | {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}
                    ],
                }
            ]
        },
        422,
        "invalid_image_url",
    ),
    (
        "system message with image",
        chat_body(make_image())
        | {
            "messages": [
                {"role": "system", "content": "Be brief."},
                chat_body(make_image())["messages"][0],
            ]
        },
        422,
        "system_message_with_image",
    ),
    (
        "json output on the transformers engine",
        chat_body(make_image(), response_format={"type": "json_object"}),
        422,
        "unsupported_parameter",
    ),
    (
        "json_schema without a schema",
        chat_body(make_image(), response_format={"type": "json_schema"}),
        422,
        "invalid_parameter",
    ),
    (
        "bad response_format",
        chat_body(make_image(), response_format={"type": "yaml"}),
        422,
        "invalid_parameter",
    ),
    ("timeout too long", chat_body(make_image(), timeout_seconds=10**6), 422, "invalid_parameter"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [pytest.param(b, s, c, id=name) for name, b, s, c in BAD_JSON_BODIES],
)
def test_create_job_bad_json_is_4xx_and_creates_nothing(
    client, api, settings, s3_server, user_key, body, status, code
):
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    _assert_nothing_created(api, settings, s3_server)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer lp_wrong"}, "invalid_api_key"),
        ({"Authorization": "Bearer nonsense"}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "missing_api_key"),
    ],
)
def test_create_job_without_valid_key_is_401(client, api, settings, s3_server, headers, code):
    response = client.post("/v1/jobs", json=chat_body(make_image()), headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == code
    _assert_nothing_created(api, settings, s3_server)


def test_create_job_malformed_json_is_400(client, api, settings, s3_server, user_key):
    response = client.post(
        "/v1/jobs", data="{not json", headers=auth(user_key), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_json"
    _assert_nothing_created(api, settings, s3_server)


def test_create_job_wrong_content_type_is_415(client, api, settings, s3_server, user_key):
    response = client.post("/v1/jobs", data="x", headers=auth(user_key), content_type="text/plain")
    assert response.status_code == 415
    _assert_nothing_created(api, settings, s3_server)


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"prompt": "hi", "image": (io.BytesIO(b"not an image"), "a.png")}, 415,
         "unsupported_image_format"),
        ({"image": (io.BytesIO(make_image()), "a.png")}, 422, "invalid_parameter"),
        ({"prompt": "hi", "image": (io.BytesIO(make_image()), "a.png"), "max_tokens": "many"},
         422, "invalid_parameter"),
        ({"prompt": "hi", "image": (io.BytesIO(make_image()), "a.png"), "colour": "red"},
         422, "invalid_parameter"),
        ({"prompt": "hi", "image": [(io.BytesIO(make_image()), "a.png"),
                                    (io.BytesIO(make_image(20, 20)), "b.png")]},
         422, "too_many_images"),
    ],
)  # fmt: skip
def test_create_job_bad_multipart_is_4xx_and_creates_nothing(
    client, api, settings, s3_server, user_key, form, status, code
):
    response = client.post(
        "/v1/jobs", data=form, headers=auth(user_key), content_type="multipart/form-data"
    )
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    _assert_nothing_created(api, settings, s3_server)


def test_request_over_body_limit_is_413(client, api, settings, s3_server, user_key):
    big = b"x" * (settings.max_request_bytes + 1)
    response = client.post(
        "/v1/jobs", data=big, headers=auth(user_key), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"
    _assert_nothing_created(api, settings, s3_server)


def test_list_models_shows_limits_and_prices(settings_for):
    served = ["loupe-tiny-mllama", "llama-3.2-11b-vision-instruct", "llama-3.2-90b-vision-instruct"]
    api = build_test_api(settings_for(served_models=",".join(served)))
    try:
        response = api.client().get("/v1/models", headers=auth(new_key(api.keys).token))
    finally:
        api.close()
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json["data"]}
    assert set(models) == set(served)
    big = models["llama-3.2-90b-vision-instruct"]
    assert big["limits"]["max_images"] == 1
    assert big["pricing"] == {
        "input_per_million": "0.35",
        "output_per_million": "0.40",
        "per_image": "0.0005058",
        "currency": "USD",
    }


def test_unknown_route_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_cancel_queued_job_never_runs(client, api, user_key, other_key):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(other_key)).status_code == 404
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(user_key))
    assert response.status_code == 200
    assert response.json["status"] == "canceled"
    assert response.json["error"]["code"] == "canceled"
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(user_key))
    assert again.status_code == 200
    assert again.json["status"] == "canceled"
    assert api.jobs.claim(job_id, utcnow(), timedelta(seconds=60)) is None


def test_cancel_running_job_flags_it_for_the_worker(client, api, user_key):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    api.jobs.claim(job_id, utcnow(), timedelta(seconds=60))
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(user_key))
    assert response.status_code == 200
    assert response.json["status"] == "running"
    assert response.json["cancel_requested"] is True
    assert api.jobs.cancel_requested([job_id]) == {job_id}


def test_cancel_finished_job_is_409(client, api, user_key):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    job = api.jobs.claim(job_id, utcnow(), timedelta(seconds=60))
    api.jobs.succeed(
        job_id, job.attempts, utcnow(), text="x", finish_reason="stop",
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(user_key))
    assert response.status_code == 409
    assert response.json["error"]["code"] == "job_finished"


def test_json_job_without_a_model_uses_the_default_model(client, user_key, settings):
    body = chat_body(make_image())
    del body["model"]
    response = client.post("/v1/jobs", json=body, headers=auth(user_key))
    assert response.status_code == 202, response.json
    assert response.json["model"] == build_registry(settings).default_model


def test_a_submit_nudges_the_dispatcher_after_its_commit(client, api, settings, user_key):
    import redis

    from services.jobs.handoff import DISPATCH_CHANNEL

    listener = redis.Redis.from_url(settings.broker_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(DISPATCH_CHANNEL)
    try:
        listener.get_message(timeout=1)  # the subscription's confirmation
        response = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key))
        assert response.status_code == 202
        message = listener.get_message(timeout=5)
        assert message is not None and message["data"] == b"inference"
    finally:
        listener.close()
