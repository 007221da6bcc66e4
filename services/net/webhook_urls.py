"""Webhook URLs: the shared SSRF guard (``services.net.ssrf``) with the webhook policy.

Checked at submit (a 422) and again by the worker just before each POST, which then connects to
exactly the address it checked (see ``workers/webhook_sender.py``).
"""

from __future__ import annotations

from services.errors import InvalidInput
from services.net import ssrf
from services.net.ssrf import Resolver, Target, blocked_reason, system_resolver
from services.settings import Settings

__all__ = [
    "Resolver",
    "Target",
    "WebhookUrlRefused",
    "blocked_reason",
    "check_webhook_url",
    "resolve_target",
    "system_resolver",
    "webhook_policy",
]


class WebhookUrlRefused(InvalidInput):
    """The webhook URL is not acceptable (scheme, host, or a non-public address)."""

    code = "invalid_webhook_url"


def webhook_policy(settings: Settings) -> ssrf.UrlPolicy:
    return ssrf.UrlPolicy(
        label="webhook",
        allow_http=settings.webhook_allow_http,
        allowed_networks=settings.webhook_allowed_networks,
        refused=WebhookUrlRefused,
    )


def resolve_target(url: str, settings: Settings, resolver: Resolver = system_resolver) -> Target:
    """Check ``url`` and pick the address to connect to; :class:`WebhookUrlRefused` if refused."""
    return ssrf.resolve_target(url, webhook_policy(settings), resolver)


def check_webhook_url(url: str | None, settings: Settings) -> str | None:
    """Submit-time check: ``url`` unchanged when acceptable, :class:`WebhookUrlRefused` if not."""
    if url is None:
        return None
    resolve_target(url, settings)
    return url
