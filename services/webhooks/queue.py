"""Enqueueing webhook deliveries: the ``WebhookQueue`` Protocol and its Celery adapter.

Producer-only, by task *name*, on its own queue (``LOUPE_WEBHOOK_QUEUE``) that only the
webhooks worker consumes, so deliveries never take a GPU worker's slot. A message is published
only when its attempt is due (``services/webhooks/dispatch.py``): there is no countdown here, so
no later attempt ever waits in the broker.
"""

from __future__ import annotations

from typing import Protocol

from services.jobs.queue import CeleryProducer
from services.settings import Settings

DELIVER_TASK = "loupe.webhooks.deliver"


class WebhookQueue(Protocol):
    def enqueue_delivery(self, event_id: str, attempt: int) -> None:
        """Run attempt number ``attempt`` of ``event_id`` now."""
        ...


class CeleryWebhookQueue:
    """Publishes ``loupe.webhooks.deliver(event_id, attempt)`` on the webhooks queue."""

    def __init__(self, settings: Settings) -> None:
        self._queue = settings.webhook_queue
        self._producer = CeleryProducer(settings, "loupe-webhook-producer")

    def enqueue_delivery(self, event_id: str, attempt: int) -> None:
        self._producer.send(DELIVER_TASK, [event_id, attempt], self._queue)

    def close(self) -> None:
        self._producer.close()
