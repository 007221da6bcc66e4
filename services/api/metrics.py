"""``GET /metrics``: Prometheus text format.

Open by default (the local stack listens on loopback only); with ``LOUPE_METRICS_TOKEN`` set,
scrapers must send ``Authorization: Bearer <token>`` (Prometheus ``authorization`` config).
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request

from services.admin.monitor import Monitor
from services.admin.prometheus import CONTENT_TYPE, exposition
from services.errors import Unauthenticated


def blueprint(monitor: Monitor, token: str | None) -> Blueprint:
    """``/metrics`` from ``monitor``; with a ``token``, only for requests bearing it."""
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def metrics() -> Response:
        if token is not None:
            _check_token(token)
        return Response(exposition(monitor), content_type=CONTENT_TYPE)

    return bp


def _check_token(expected: str) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise Unauthenticated(
            "Send 'Authorization: Bearer <LOUPE_METRICS_TOKEN>'.", code="invalid_metrics_token"
        )
