"""Flask application factory."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask

from services.api import (
    admin,
    docs,
    files,
    health,
    jobs,
    keys,
    metrics,
    models,
    openai_compat,
    usage,
    webhooks,
)
from services.api.auth import authenticator
from services.api.errors import register_error_handlers
from services.api.headers import register_security_headers
from services.api.ratelimit import register_rate_limit_headers
from services.api.root import ApiRoot
from services.api.waiting import Waiting
from services.errors import NotFound


def create_app(root: ApiRoot) -> Flask:
    """The API over ``root``: each blueprint is handed the parts of the root it uses.
    The caller keeps ``root`` and closes it when the app is done with."""
    settings = root.settings
    app = Flask("loupe")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.getLogger("loupe").setLevel(settings.log_level)
    register_error_handlers(app)
    register_security_headers(app)
    register_rate_limit_headers(app, root.quotas)
    app.url_value_preprocessor(_refuse_odd_ids)
    _register_blueprints(app, root)
    return app


def _register_blueprints(app: Flask, root: ApiRoot) -> None:
    settings = root.settings
    authenticate = authenticator(root.keys)
    waiting = Waiting(root.waiter, root.jobs, settings.max_wait_seconds)
    chat_timeout = min(settings.chat_completions_timeout_seconds, settings.max_wait_seconds)
    for bp in (
        health.blueprint(root.readiness),
        docs.blueprint(),
        jobs.blueprint(root.jobs, root.retries, waiting, root.registry.default_model, authenticate),
        files.blueprint(root.files, authenticate),
        models.blueprint(root.registry, _live_workers(root), authenticate),
        usage.blueprint(root.usage, root.quotas, authenticate),
        webhooks.blueprint(root.webhooks, authenticate),
        admin.api_blueprint(root.monitor, root.retries, authenticate),
        keys.blueprint(root.keys, root.key_quotas, authenticate),
        admin.page_blueprint(),
        metrics.blueprint(
            root.monitor,
            settings.metrics_token,
            open_=settings.metrics_open,
            authenticate=authenticate,
        ),
        openai_compat.blueprint(
            root.jobs, root.waiter, root.registry.default_model, chat_timeout, authenticate
        ),
    ):
        app.register_blueprint(bp)


def _live_workers(root: ApiRoot) -> models.LiveWorkers | None:
    """What narrows /v1/models: nothing when LOUPE_SERVED_MODELS names the served models,
    else the live workers (see :mod:`services.api.models`)."""
    return None if root.settings.served_models else root.monitor.live_workers


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _refuse_odd_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """An id in a path (job, file) that no id could ever look like is a 404 before it reaches
    SQL (PostgreSQL refuses NUL characters in text outright: that would be a 500)."""
    for name, value in (values or {}).items():
        if name.endswith("_id") and isinstance(value, str) and not _ID.match(value):
            raise NotFound(f"No such {name.removesuffix('_id')}: {value[:64]!r}.", code="not_found")
