"""Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask

from services.api import files, health, jobs, models, openai_compat, usage, webhooks
from services.api.admin import api_bp as admin_api_bp
from services.api.admin import page_bp as admin_page_bp
from services.api.errors import register_error_handlers
from services.api.metrics import bp as metrics_bp
from services.container import Container, build_container
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
