"""Consumer helper: verify a Loupe webhook delivery in your own receiver.

Usage (Flask)::

    from services.webhooks.verify import verify_delivery
    event = verify_delivery(secret, request.get_data(), request.headers)
    event["type"], event["data"]["status"]

It checks the Standard Webhooks signature (any of the space-separated ``v1,`` signatures may
match, so it works through a secret rotation) and that ``webhook-timestamp`` is within five
minutes of now (replays of old deliveries fail). Deduplicate on the ``webhook-id`` header: a
retried or redelivered event keeps its id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify_delivery"]


def verify_delivery(secret: str, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The verified event ``{"type", "timestamp", "data"}``; raises
    :class:`WebhookVerificationError` for a bad signature, missing headers or a stale timestamp.

    ``body`` must be the raw request body, byte for byte (not re-serialised JSON).
    """
    event = Webhook(secret).verify(body, dict(headers))
    if not isinstance(event, dict):
        raise WebhookVerificationError("The payload is not a JSON object")
    return event
