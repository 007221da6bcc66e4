"""The webhook POST: to exactly the address the SSRF guard just checked, never following redirects.

``post_webhook`` resolves and checks the URL again (``services.net.webhook_urls.resolve_target``)
and opens the TCP connection to that checked IP, while the ``Host`` header, TLS SNI and
certificate check use the URL's host name. A DNS answer that changed since submit (rebinding)
is therefore checked, and the one we checked is the one we connect to.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import urllib3

from services.net.ssrf import read_body, send
from services.net.webhook_urls import Resolver, WebhookUrlRefused, resolve_target, system_resolver
from services.settings import Settings
from services.webhooks.types import RESPONSE_BODY_LIMIT, AttemptResult

USER_AGENT = "Loupe-Webhooks/1"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def post_webhook(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    settings: Settings,
    resolver: Resolver = system_resolver,
) -> AttemptResult:
    """POST ``body`` to ``url``; never raises for network trouble (it is in ``error``)."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = resolve_target(url, settings, resolver)
    except WebhookUrlRefused as exc:
        return AttemptResult(None, elapsed_ms(), error=f"refused: {exc.message}")
    timeout = settings.webhook_timeout_seconds
    request_headers = {**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT}
    try:
        with send(target, "POST", timeout, request_headers, body) as response:
            # The status is what counts; the body is read for the log, within the time limit.
            snippet, _ = read_body(response, RESPONSE_BODY_LIMIT, started + timeout)
        return AttemptResult(
            http_status=response.status,
            latency_ms=elapsed_ms(),
            error=None if 200 <= response.status < 300 else f"HTTP {response.status}",
            response_body=snippet[:RESPONSE_BODY_LIMIT].decode("utf-8", errors="replace"),
            retry_after_seconds=parse_retry_after(
                response.headers.get("Retry-After"), datetime.now(UTC)
            ),
        )
    except urllib3.exceptions.HTTPError as exc:
        return AttemptResult(None, elapsed_ms(), error=f"{type(exc).__name__}: {exc}")
