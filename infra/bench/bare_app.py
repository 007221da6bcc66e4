"""The bare Flask app of ``make bench-api``: the least work of the kinds a submit and a poll do.

``make bench-api`` serves it beside the API, under the API's own gunicorn flags (``gunicorn
--config infra/gunicorn_conf.py ... 'infra.bench.bare_app:create_app()'``), so the ratio of the
two is what Loupe's code costs over Flask, gunicorn and one database read or one image check.

- ``GET /healthz``: 200 (readiness).
- ``POST /upload``: the multipart ``image`` file opened by Pillow, verified and its size read:
  200 ``{"width", "height", "bytes"}``; 400 without an ``image`` file, 422 when Pillow refuses
  it. Nothing is stored.
- ``GET /rows/<id>``: the ``jobs`` row with that primary key from the database
  ``BENCH_BARE_DATABASE_URL`` names (a SQLAlchemy URL with its driver, read with one
  ``SELECT`` through a connection pool): 200 with the row as JSON, 404 when there is none.
"""

from __future__ import annotations

import io
import os
from typing import Any

from flask import Flask, jsonify, request
from PIL import Image, UnidentifiedImageError
from sqlalchemy import Engine, create_engine, text

DATABASE_URL_ENV = "BENCH_BARE_DATABASE_URL"
POOL_SIZE = 16
"""As many connections as a process has threads (the stack's ``LOUPE_API_THREADS``): no thread
waits for one."""
_ROW = text("SELECT * FROM jobs WHERE id = :id")


def create_app(database_url: str | None = None) -> Flask:
    """The app; its database is ``database_url``, else the environment's
    ``BENCH_BARE_DATABASE_URL`` (read here, when gunicorn calls the factory, never on import).
    Its engine is ``app.extensions["bare_engine"]`` (a test disposes of it)."""
    engine = _engine(database_url or os.environ[DATABASE_URL_ENV])
    app = Flask(__name__)
    app.extensions["bare_engine"] = engine
    app.add_url_rule("/healthz", "healthz", lambda: ("ok", 200))
    app.add_url_rule("/upload", "upload", _upload, methods=["POST"])
    app.add_url_rule("/rows/<row_id>", "row", lambda row_id: _row(engine, row_id))
    return app


def _engine(url: str) -> Engine:
    connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
    return create_engine(
        url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, connect_args=connect_args
    )


def _upload() -> Any:
    upload = request.files.get("image")
    if upload is None:
        return jsonify(error="no image file"), 400
    data = upload.read()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return jsonify(error=f"not an image: {exc}"), 422
    return jsonify(width=width, height=height, bytes=len(data))


def _row(engine: Engine, row_id: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(_ROW, {"id": row_id}).mappings().first()
    if row is None:
        return jsonify(error="no such row"), 404
    return jsonify(dict(row))
