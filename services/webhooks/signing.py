"""Standard Webhooks signing: the three headers of one delivery attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from math import floor

from standardwebhooks import Webhook


def signature_headers(
    secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str
) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for ``body``.

    One ``v1,<base64 HMAC-SHA256>`` per secret, space-separated (during a rotation overlap the
    current and the previous secret both sign, so consumers holding either one verify).
    """
    if not secrets:
        raise ValueError("at least one secret signs a delivery")
    signatures = " ".join(Webhook(s).sign(msg_id, timestamp, body) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(floor(timestamp.timestamp())),
        "webhook-signature": signatures,
    }
