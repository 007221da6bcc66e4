"""POST /v1/jobs with an http(s) image_url: fetched at submit through the SSRF guard, stored in S3
like an upload; a refused or failing URL is a 4xx that creates nothing."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.image_server import running_image_server
from tests.support.images import make_image


@pytest.fixture
def image_server():
    yield from running_image_server()


@pytest.fixture
def settings(settings_for):
    """Loopback allowlisted for image URLs (a local image server), as in the local stack."""
    return settings_for(
        image_url_allowed_networks="127.0.0.0/8",
        image_url_allow_http="true",
    )


def url_body(url: str, **extra):
    body = chat_body(None, **extra)
    body["messages"] = [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]  # fmt: skip
    return body


def _nothing_created(api, settings, s3_server) -> bool:
    return (
        count_jobs(api.db_engine),
        count_objects(s3_server, settings.s3_bucket),
        queue_length(settings.broker_url),
    ) == (0, 0, 0)


def test_an_image_url_is_fetched_and_stored_like_an_upload(client, api, user_key,
                                                           image_server):  # fmt: skip
    image = make_image(70, 50)
    image_server.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, image)
    response = client.post(
        "/v1/jobs", json=url_body(image_server.url("/cat.png")), headers=auth(user_key)
    )
    assert response.status_code == 202, response.json
    job = api.jobs.get(response.json["id"])
    assert [ref.sha256 for ref in job.images] == [hashlib.sha256(image).hexdigest()]
    assert api.blobs.get(job.images[0].key) == image
    # The same picture sent inline is the same content-addressed object.
    inline = "data:image/png;base64," + base64.b64encode(image).decode()
    again = client.post("/v1/jobs", json=url_body(inline), headers=auth(user_key))
    assert api.jobs.get(again.json["id"]).images[0].key == job.images[0].key


def test_an_idempotent_replay_matches_by_url_and_does_not_fetch_again(
    client, user_key, image_server
):
    image_server.routes["/cat.png"] = (200, {}, make_image())
    body = url_body(image_server.url("/cat.png"))
    headers = auth(user_key) | {"Idempotency-Key": "remote-1"}
    first = client.post("/v1/jobs", json=body, headers=headers)
    image_server.routes["/cat.png"] = (200, {}, make_image(20, 20))  # the picture changed since
    replay = client.post("/v1/jobs", json=body, headers=headers)
    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json["id"] == first.json["id"]
    assert image_server.hits == ["/cat.png"]


@pytest.mark.parametrize(
    ("path", "route", "status", "code"),
    [
        ("/missing.png", None, 422, "image_url_unreachable"),
        ("/moved", (302, {"Location": "http://169.254.169.254/"}, b""), 422, "image_url_unreachable"),
        ("/page.html", (200, {"Content-Type": "text/html"}, b"<html></html>"), 415, "unsupported_image_format"),
    ],
)  # fmt: skip
def test_a_failing_image_url_is_a_4xx_and_creates_nothing(
    client, api, settings, s3_server, user_key, image_server, path, route, status, code
):
    if route is not None:
        image_server.routes[path] = route
    response = client.post(
        "/v1/jobs", json=url_body(image_server.url(path)), headers=auth(user_key)
    )
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert _nothing_created(api, settings, s3_server)


def test_targets_outside_the_allowlist_are_refused(client, api, settings, s3_server, user_key):
    for url in ("https://10.0.0.7/a.png", "http://169.254.169.254/latest", "https://[::1]/a.png"):
        response = client.post("/v1/jobs", json=url_body(url), headers=auth(user_key))
        assert response.status_code == 422
        assert response.json["error"]["code"] == "invalid_image_url", response.json
    assert _nothing_created(api, settings, s3_server)
