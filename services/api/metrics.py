"""``GET /metrics``: Prometheus text format, never open by accident.

With ``LOUPE_METRICS_TOKEN`` set, scrapers send ``Authorization: Bearer <token>`` (Prometheus
``authorization`` config). Without one, an admin API key is needed, unless
``LOUPE_METRICS_OPEN=true`` opens it to anyone (a private network, the local stack).
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request

from services.admin.monitor import Monitor
from services.admin.prometheus import CONTENT_TYPE, exposition
from services.api.auth import Authenticate, require_admin
from services.errors import Unauthenticated


def blueprint(
    monitor: Monitor, token: str | None, *, open_: bool, authenticate: Authenticate
) -> Blueprint:
    """``/metrics`` from ``monitor``: for requests bearing ``token`` when there is one, else
    for anyone when ``open_``, else for admin keys."""
    bp = Blueprint("metrics", __name__)
    if token is not None:
        bp.before_request(lambda: _check_token(token))
    elif not open_:
        bp.before_request(authenticate)
        bp.before_request(require_admin)

    @bp.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(monitor), content_type=CONTENT_TYPE)

    return bp


def _check_token(expected: str) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise Unauthenticated(
            "Send 'Authorization: Bearer <LOUPE_METRICS_TOKEN>'.", code="invalid_metrics_token"
        )
