"""Thin task shell: one delivery attempt of one webhook event (``workers/webhooks.py``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from services.errors import Unavailable
from services.webhooks.queue import DELIVER_TASK
from workers.roots import roots_of
from workers.webhooks import deliver

log = logging.getLogger("loupe.webhooks")

UNAVAILABLE_RETRIES = 5
"""Short countdown retries (2, 4, 8, 16, 30 s: about a minute) while our database or broker is
down. Bounded on purpose: a countdown message waits in the worker and in kombu's ``unacked``
hash, where a long one outlives its worker or the visibility timeout and comes back as a
duplicate. The event's row stays due in SQL (or its claim turns stale), so after these retries
beat's sweep publishes the attempt again once the database is back; nothing is lost by stopping."""
UNAVAILABLE_RETRY_MAX_S = 30


# Acked on receipt, not after the POST: the SQL schedule, not the broker, brings back an attempt
# whose worker died (its claim turns stale and the sweep publishes it again), so a message kombu
# restored after the visibility timeout would only be a late duplicate.
@shared_task(name=DELIVER_TASK, bind=True, max_retries=UNAVAILABLE_RETRIES, acks_late=False)
def deliver_webhook(self: Task[Any, Any], event_id: str, attempt: int) -> str:
    ctx = roots_of(self.app).light().deliveries
    try:
        return deliver(event_id, attempt, ctx).value
    except Unavailable as exc:
        # Our database or broker is down, not the receiver: try this same attempt again soon.
        if self.request.retries >= UNAVAILABLE_RETRIES:
            log.warning("webhook %s attempt %d: left to the sweep (%s)", event_id, attempt, exc)
            return "deferred"
        countdown = min(UNAVAILABLE_RETRY_MAX_S, 2 ** (self.request.retries + 1))
        raise self.retry(exc=exc, countdown=countdown) from exc
