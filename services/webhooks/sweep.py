"""Re-enqueue webhook events whose next attempt is long overdue (run by beat, see
``workers/tasks/maintenance.py``).

A delivery's next attempt lives in a Celery message. That message is lost if the worker dies
between recording an attempt and enqueueing the next one, or if the broker was down at that
moment. The event row still says ``pending`` with its ``next_attempt_at``; this sweep sends the
attempt again. A duplicate is harmless: each attempt number is claimed once in the SQL log.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from services.webhooks.queue import WebhookQueue
from services.webhooks.store import WebhookStore

log = logging.getLogger("loupe.webhooks.sweep")


def requeue_overdue(
    store: WebhookStore, queue: WebhookQueue, now: datetime, grace: timedelta, limit: int = 500
) -> int:
    """Enqueue the next attempt of every pending event due before ``now - grace``."""
    requeued = 0
    for event_id in store.overdue_pending(now - grace, limit):
        attempts = store.attempts_for([event_id]).get(event_id, [])
        last = max(attempts, key=lambda a: a.attempt, default=None)
        if last is None:
            attempt = 1
        elif last.completed_at is None:
            attempt = last.attempt  # a worker died mid-POST: its stale claim is taken over
        else:
            attempt = last.attempt + 1
        queue.enqueue_delivery(event_id, attempt)
        requeued += 1
    if requeued:
        log.warning("requeued %d overdue webhook event(s)", requeued)
    return requeued
