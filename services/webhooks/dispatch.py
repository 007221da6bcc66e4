"""The SQL schedule of webhook deliveries: when each event's next attempt is due, who publishes it.

An event's row is its schedule: ``state`` pending, ``next_attempt_at`` when its next attempt is
due, ``dispatched_until`` while an attempt of it is out. No message waits in the broker for a
later attempt (a Celery countdown would sit in kombu's ``unacked`` hash, and a worker that dies
holding it gets it redelivered after the visibility timeout). Instead:

- beat's sweep (:func:`dispatch_due`, every ``LOUPE_WEBHOOK_SWEEP_SECONDS``) publishes the
  attempt of every event that is due, so a retry goes out at most that long after its time;
- an attempt due at once (the first, an event woken by its predecessor, a redelivery, a
  ``Retry-After: 0``) is published on the spot by :func:`dispatch`, the same way.

Before publishing, :func:`dispatch` takes the event with a compare-and-set on the row (due, and
nothing out) that marks it out for ``REDISPATCH_AFTER``: two sweeps, or a sweep and an immediate
send, never publish the same attempt twice. The attempt number then fences the POST: the
delivery task claims attempt N by inserting its row in the delivery log (``claim_attempt``), so a
duplicated or redelivered message never sends an attempt twice, and the claim holds the event
for as long as the POST may take (:func:`claim_window`).

What remains at-least-once: a worker killed mid-POST leaves a claimed, uncompleted attempt. The
receiver may or may not have it; nobody can know. Once the claim is older than
:func:`claim_window` (the POST timeout plus a margin, so never while that POST can still be
running), the sweep publishes the same attempt again and the next task takes the claim over and
sends it again, with the same ``webhook-id``. Receivers deduplicate on ``webhook-id`` (Standard
Webhooks). A message lost before its claim (a broker restart without AOF, a worker killed
between ack and claim) is published again ``REDISPATCH_AFTER`` after it was sent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from services.errors import Unavailable
from services.webhooks.queue import WebhookQueue
from services.webhooks.store import WebhookStore
from services.webhooks.types import DeliveryAttempt, WebhookEvent

log = logging.getLogger("loupe.webhooks.dispatch")

REDISPATCH_AFTER = timedelta(minutes=5)
"""A published attempt that no task has claimed this long after is taken for lost and published
again: far above the usual wait in the webhooks queue (a duplicate is harmless, only wasted)."""
STALE_CLAIM_MARGIN_S = 60.0
"""Added to the POST timeout: the DNS lookup, signing, and a slow database around the POST."""
SWEEP_LIMIT = 500
"""Events one sweep publishes at most; the oldest due first, the rest on the next sweep."""


def claim_window(post_timeout_seconds: float) -> timedelta:
    """How long a claimed attempt counts as being sent: after it, its worker is taken for dead."""
    return timedelta(seconds=post_timeout_seconds + STALE_CLAIM_MARGIN_S)


def dispatch_due(
    store: WebhookStore,
    queue: WebhookQueue,
    now: datetime,
    window: timedelta,
    limit: int = SWEEP_LIMIT,
) -> int:
    """Publish the next attempt of every event due by ``now``; how many were published.

    Raises ``Unavailable`` at the first publish the broker refuses (the rest would fail too);
    that event is left due, for the next sweep.
    """
    published = sum(
        dispatch(store, queue, event_id, now, window) for event_id in store.due_events(now, limit)
    )
    if published:
        log.info("published %d due webhook attempt(s)", published)
    return published


def dispatch(
    store: WebhookStore, queue: WebhookQueue, event_id: str, now: datetime, window: timedelta
) -> bool:
    """Publish the event's next attempt if it is due and nobody else has it out; True if this
    call published. ``Unavailable`` from the broker leaves the event due again and is raised."""
    if not store.take_due(event_id, now, now + REDISPATCH_AFTER):
        return False
    last = store.last_attempt(event_id)
    attempt = attempt_to_send(store.get_event(event_id), last, now - window)
    if attempt is None:
        assert last is not None  # an attempt is in flight: look again when its claim is stale
        store.hold(event_id, last.attempted_at + window)
        return False
    try:
        queue.enqueue_delivery(event_id, attempt)
    except Unavailable:
        store.hold(event_id, None)
        raise
    return True


def attempt_to_send(
    event: WebhookEvent, last: DeliveryAttempt | None, stale_cutoff: datetime
) -> int | None:
    """The number of the event's next attempt, given its ``last`` one; None while ``last`` is
    claimed and may still be sending (claimed after ``stale_cutoff`` and not completed).

    A stale ``last`` is sent again under its own number: the task takes its claim over.
    """
    if last is None or last.attempt < event.run_first_attempt:
        return event.run_first_attempt  # the run's first (a redelivery continues the numbering)
    if last.completed_at is not None:
        return last.attempt + 1
    return last.attempt if last.attempted_at <= stale_cutoff else None
