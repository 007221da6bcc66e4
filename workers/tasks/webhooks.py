"""Thin task shell: one delivery attempt of one webhook event (``workers/webhooks.py``)."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from services.errors import Unavailable
from services.webhooks.queue import DELIVER_TASK
from workers.roots import roots_of
from workers.webhooks import deliver


@shared_task(name=DELIVER_TASK, bind=True, max_retries=20, acks_late=True)
def deliver_webhook(self: Task[Any, Any], event_id: str, attempt: int) -> str:
    ctx = roots_of(self.app).light().deliveries
    try:
        return deliver(event_id, attempt, ctx).value
    except Unavailable as exc:
        # Our database or broker is down, not the receiver: try this same attempt again.
        countdown = min(300, 2 ** (self.request.retries + 2))
        raise self.retry(exc=exc, countdown=countdown) from exc
