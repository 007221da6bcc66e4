"""Enqueueing webhook deliveries: the ``WebhookQueue`` Protocol and its Celery adapter.

Producer-only, by task *name*, on its own queue (``LOUPE_WEBHOOK_QUEUE``) that only the
webhooks worker consumes, so deliveries never take a GPU worker's slot.
"""

from __future__ import annotations

from typing import Protocol

from services.jobs.queue import CeleryProducer
from services.settings import Settings

DELIVER_TASK = "loupe.webhooks.deliver"


class WebhookQueue(Protocol):
    def enqueue_delivery(self, event_id: str, attempt: int, countdown: float = 0) -> None:
        """Run attempt number ``attempt`` of ``event_id`` in ``countdown`` seconds."""
        ...


class CeleryWebhookQueue:
    """Publishes ``loupe.webhooks.deliver(event_id, attempt)`` on the webhooks queue."""

    def __init__(self, settings: Settings) -> None:
        self._queue = settings.webhook_queue
        self._producer = CeleryProducer(settings, "loupe-webhook-producer")

    def enqueue_delivery(self, event_id: str, attempt: int, countdown: float = 0) -> None:
        self._producer.send(
            DELIVER_TASK,
            [event_id, attempt],
            self._queue,
            countdown=countdown if countdown > 0 else None,
        )

    def close(self) -> None:
        self._producer.close()
