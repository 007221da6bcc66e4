"""``GET /v1/openapi.json`` (the API's OpenAPI 3.1 document) and ``GET /docs`` (a reference page).

The page is Swagger UI from the ``swagger-ui-py`` package's assets, served by Loupe itself (no
CDN), started by Loupe's own ``docs.js``: no inline script, so the page's CSP allows scripts
from this origin only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flask import Blueprint, Response, jsonify, render_template, send_from_directory

from services.api.contract import SWAGGER_UI_ASSETS, document
from services.errors import ConfigurationError

# Swagger UI sets style attributes on its elements, hence 'unsafe-inline' for styles (never for
# scripts); its validator badge is off, so nothing leaves this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def swagger_ui_dir() -> Path:
    """The Swagger UI assets of the ``swagger-ui-py`` package (found without importing it: its
    ``__init__`` loads its framework handlers, which Loupe does not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "The swagger-ui-py package is missing: install the api extra.", code="missing_docs"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def blueprint() -> Blueprint:
    """The document (built once, here) and the page with its assets."""
    bp = Blueprint(
        "docs", __name__, template_folder="templates",
        static_folder="static/docs", static_url_path="/docs/static",
    )  # fmt: skip
    spec = document()
    assets = swagger_ui_dir()

    @bp.get("/v1/openapi.json")
    def openapi_json() -> Response:
        return jsonify(spec)

    @bp.get("/docs")
    def docs() -> Response:
        response = Response(render_template("docs.html"), mimetype="text/html")
        response.headers["Content-Security-Policy"] = DOCS_CSP
        return response

    @bp.get("/docs/swagger-ui/<any(" + ", ".join(f'"{a}"' for a in SWAGGER_UI_ASSETS) + "):name>")
    def swagger_ui_asset(name: str) -> Response:
        return send_from_directory(assets, name, max_age=86400)

    return bp
