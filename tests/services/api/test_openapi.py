"""/v1/openapi.json and /docs: the document is valid OpenAPI 3.1 and names every route."""

from __future__ import annotations

import io
import re
from typing import Any

from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from services.api.contract import SWAGGER_UI_ASSETS, document
from services.api.docs import DOCS_CSP
from services.auth.keys import Role
from services.clock import utcnow
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image

_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}  # HEAD and OPTIONS are Flask's own


def _routes(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every rule, Flask's static-file endpoints aside (they serve
    the pages' own CSS and JavaScript, not API)."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(method, path) for method in (rule.methods or set()) & _METHODS}
    return routes


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item}


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(doc).validate()


def test_every_route_is_documented_and_every_documented_route_exists(client: Any) -> None:
    assert _routes(client.application) == _documented(document())


def test_every_operation_documents_the_error_schema() -> None:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            errors = {s: r for s, r in op["responses"].items() if s >= "400"}
            for status, response in errors.items():
                assert "application/json" in response["content"], (method, path, status)


def test_the_document_is_served(client: Any) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == document()


def test_the_docs_page_runs_no_inline_script(client: Any) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == DOCS_CSP
    assert "script-src 'self';" in DOCS_CSP and "frame-ancestors 'none'" in DOCS_CSP
    page = response.get_data(as_text=True)
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    for src in re.findall(r'<script src="([^"]+)"', page) + re.findall(r'href="([^"]+)"', page):
        with client.get(src) as asset:  # a file response: closing it closes the file
            assert asset.status_code == 200, src
            assert asset.data


def test_the_docs_assets_come_from_the_package(client: Any) -> None:
    for name in SWAGGER_UI_ASSETS:
        with client.get(f"/docs/swagger-ui/{name}") as asset:
            assert asset.status_code == 200
    assert client.get("/docs/swagger-ui/index.html").status_code == 404
    assert client.get("/docs/swagger-ui/..%2Fcore.py").status_code == 404


def _check(doc: dict[str, Any], name: str, body: Any) -> None:
    """``body`` is valid against the document's component schema ``name``."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(body)


def test_real_answers_match_the_document(client: Any, user_key: str) -> None:
    """The presenters' output against the response schemas (schemathesis checks this too, on
    the data it happens to generate)."""
    doc, key = document(), auth(user_key)
    upload = client.post(
        "/v1/files", data={"file": (io.BytesIO(make_image()), "a.png")}, headers=key,
        content_type="multipart/form-data",
    )  # fmt: skip
    _check(doc, "File", upload.json)
    created = client.post(
        "/v1/jobs", json=chat_body(make_image(), metadata={"a": "b"}), headers=key
    )
    assert created.status_code == 202
    _check(doc, "Job", created.json)
    _check(doc, "Job", client.get(created.headers["Location"], headers=key).json)
    _check(doc, "JobPage", client.get("/v1/jobs", headers=key).json)
    _check(doc, "Job", client.post(f"/v1/jobs/{created.json['id']}/cancel", headers=key).json)
    retried = client.post(f"/v1/jobs/{created.json['id']}/retry", headers=key)
    assert retried.status_code == 202
    _check(doc, "Job", retried.json)
    _check(doc, "FilePage", client.get("/v1/files", headers=key).json)
    _check(doc, "ModelList", client.get("/v1/models", headers=key).json)
    _check(doc, "Quota", client.get("/v1/quota", headers=key).json)
    _check(doc, "Usage", client.get("/v1/usage", headers=key).json)
    _check(doc, "WebhookSecret", client.get("/v1/webhook-secret", headers=key).json)
    _check(doc, "Error", client.get("/v1/jobs/nope", headers=key).json)


def test_key_management_answers_match_the_document(client: Any, api: Any) -> None:
    admin = auth(api.keys.create("root", Role.ADMIN, utcnow())[1])
    doc = document()
    created = client.post("/v1/admin/keys", json={"name": "app"}, headers=admin)
    assert created.status_code == 201
    _check(doc, "ApiKeyWithSecret", created.json)
    key_id = created.json["id"]
    _check(doc, "ApiKeyList", client.get("/v1/admin/keys", headers=admin).json)
    _check(doc, "ApiKeyWithQuota", client.get(f"/v1/admin/keys/{key_id}", headers=admin).json)
    quota = client.patch(f"/v1/admin/keys/{key_id}/quota", json={"max_queued": 3}, headers=admin)
    _check(doc, "KeyQuota", quota.json)
    _check(
        doc, "ApiKeyWithSecret", client.post(f"/v1/admin/keys/{key_id}/rotate", headers=admin).json
    )
    _check(doc, "ApiKey", client.post(f"/v1/admin/keys/{key_id}/revoke", headers=admin).json)
