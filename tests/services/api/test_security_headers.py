"""Security headers on every answer, downloads that cannot run as pages, 405 with ``Allow``,
and error bodies that never name Python internals."""

from __future__ import annotations

import io
from datetime import timedelta

from services.clock import utcnow
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image

POLYGLOT = make_image() + b"<html><script>alert(document.domain)</script></html>"


def upload(client, key: str, data: bytes, name: str = "cat.png"):
    return client.post(
        "/v1/files", data={"file": (io.BytesIO(data), name)}, headers=auth(key),
        content_type="multipart/form-data",
    )  # fmt: skip


def assert_secured(response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_every_kind_of_answer_carries_the_security_headers(client, user_key):
    answers = [
        client.get("/healthz"),
        client.get("/v1/jobs", headers=auth(user_key)),
        client.get("/v1/jobs"),  # 401
        client.get("/v1/nowhere"),  # 404 from the router
        client.delete("/v1/models", headers=auth(user_key)),  # 405
        client.get("/admin"),
        client.get("/admin/static/dashboard.js"),
    ]
    for response in answers:
        assert_secured(response)
        response.close()  # a static file's answer holds the file open


def test_the_admin_page_csp_allows_no_inline_script_and_no_framing(client):
    response = client.get("/admin")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert b"<script>" not in response.data  # its scripts are files, which the CSP allows
    assert response.headers["X-Frame-Options"] == "DENY"


def test_json_answers_are_not_cached(client, user_key):
    response = client.get("/v1/jobs", headers=auth(user_key))
    assert response.headers["Cache-Control"] == "no-store"


def test_a_png_html_polyglot_downloads_sandboxed_and_unsniffable(client, user_key):
    file_id = upload(client, user_key, POLYGLOT).json["id"]
    response = client.get(f"/v1/files/{file_id}/content", headers=auth(user_key))
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.headers["Content-Disposition"] == f'inline; filename="{file_id}.png"'


def test_405_names_the_allowed_methods_in_json(client, user_key):
    response = client.delete("/v1/models", headers=auth(user_key))
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET"}
    assert response.json["error"]["code"] == "method_not_allowed"


def test_a_job_failed_by_a_missing_module_shows_no_module_names(api, client, user_key):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    job = api.jobs.claim(job_id, utcnow(), timedelta(minutes=5))
    api.jobs.fail(
        job_id, job.attempts, utcnow(), code="engine_unavailable",
        message="could not load the engine: ModuleNotFoundError: No module named 'vllm'",
    )  # fmt: skip
    body = client.get(f"/v1/jobs/{job_id}", headers=auth(user_key)).json
    assert body["error"]["code"] == "engine_unavailable"
    assert "vllm" not in body["error"]["message"]
    assert "Error" not in body["error"]["message"]
