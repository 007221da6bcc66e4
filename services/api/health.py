"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from services.api.auth import container
from services.db.session import reading

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    engine = container().db_engine
    if engine is not None:
        with reading(engine) as conn:
            conn.execute(text("SELECT 1"))
    return jsonify({"status": "ready"})
