"""``GET /metrics``: Prometheus text format.

Open by default (the local stack listens on loopback only); with ``LOUPE_METRICS_TOKEN`` set,
scrapers must send ``Authorization: Bearer <token>`` (Prometheus ``authorization`` config).
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request

from services.admin.prometheus import CONTENT_TYPE, exposition
from services.api.admin import monitor
from services.api.auth import container
from services.errors import Unauthenticated

bp = Blueprint("metrics", __name__)


def _check_token() -> None:
    expected = container().settings.metrics_token
    if expected is None:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise Unauthenticated(
            "Send 'Authorization: Bearer <LOUPE_METRICS_TOKEN>'.", code="invalid_metrics_token"
        )


@bp.get("/metrics")
def metrics() -> Response:
    _check_token()
    return Response(exposition(monitor()), content_type=CONTENT_TYPE)
