"""``RateLimit-*`` headers (draft-ietf-httpapi-ratelimit-headers, the separate-fields form) on
every authenticated answer, so clients can pace themselves before they meet a 429:

    RateLimit-Limit: 60         submissions per window
    RateLimit-Remaining: 57     left in this window
    RateLimit-Reset: 23         seconds until the window ends
    RateLimit-Policy: 60;w=60   the quota policy: 60 per 60-second window

The window is the one ``POST /v1/jobs`` and ``/v1/chat/completions`` count against (fixed
minutes on Redis's clock), read after the request so a submission sees itself counted. The
limit is the key's own, else the deployment's ``LOUPE_DEFAULT_REQUESTS_PER_MINUTE`` (600), so
every key has one. Only where that is 0 does a key without a limit of its own go without the
headers: there is nothing to pace, and no number would be true. Nor do they come when Redis
cannot say (the answer matters more than its advice).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g

from services.errors import Unavailable
from services.usage.quotas import QuotaEnforcer, RateWindow

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def register_rate_limit_headers(app: Flask, quotas: QuotaEnforcer) -> None:
    """Add the headers to ``app``'s authenticated answers (errors included, a 429 above all)."""

    def add_headers(response: Response) -> Response:
        key = g.get("api_key")
        if key is not None:
            response.headers.update(_headers(quotas, key.id))
        return response

    app.after_request(add_headers)


def _headers(quotas: QuotaEnforcer, key_id: str) -> dict[str, str]:
    """The key's headers; none when it has no limit or Redis cannot say (the answer matters
    more than its advice)."""
    try:
        window = quotas.rate_window(key_id)
    except Unavailable as exc:
        log.warning("no RateLimit headers: %s", exc.message)
        return {}
    return {} if window is None else rate_limit_headers(window)


def rate_limit_headers(window: RateWindow) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(window.limit),
        "RateLimit-Remaining": str(window.remaining),
        "RateLimit-Reset": str(window.reset_seconds),
        "RateLimit-Policy": f"{window.limit};w={WINDOW_SECONDS}",
    }
