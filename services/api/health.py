"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.admin.readiness import Readiness
from services.errors import Unavailable


def blueprint(readiness: Readiness) -> Blueprint:
    """``/healthz``: the process answers. ``/readyz``: and it reaches every system it needs
    (200), or a 503 whose code and message name the first one that did not answer."""
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @bp.get("/readyz")
    def readyz() -> Response:
        failing = readiness.failing()
        if failing is not None:
            code = failing.lower().replace(" ", "_") + "_unavailable"
            raise Unavailable(f"Not ready: {failing} did not answer.", code=code)
        return jsonify({"status": "ready"})

    return bp
