"""Flask application factory."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask

from services.api import files, health, jobs, models, openai_compat, usage, webhooks
from services.api.admin import api_bp as admin_api_bp
from services.api.admin import page_bp as admin_page_bp
from services.api.errors import register_error_handlers
from services.api.metrics import bp as metrics_bp
from services.container import Container, build_container
from services.errors import NotFound
from services.settings import Settings, load_settings


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> Flask:
    """Build the API. Pass a ``container`` to reuse adapters (tests), else one is built."""
    settings = settings or (container.settings if container else load_settings())
    app = Flask("loupe")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["loupe"] = container or build_container(settings)
    logging.getLogger("loupe").setLevel(settings.log_level)
    register_error_handlers(app)
    app.url_value_preprocessor(_refuse_odd_ids)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(usage.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(admin_api_bp)
    app.register_blueprint(admin_page_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(openai_compat.bp)
    return app


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _refuse_odd_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """An id in a path (job, file) that no id could ever look like is a 404 before it reaches
    SQL (PostgreSQL refuses NUL characters in text outright: that would be a 500)."""
    for name, value in (values or {}).items():
        if name.endswith("_id") and isinstance(value, str) and not _ID.match(value):
            raise NotFound(f"No such {name.removesuffix('_id')}: {value[:64]!r}.", code="not_found")
