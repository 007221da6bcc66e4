"""Webhook delivery in plain Python (no Celery here): sign, POST, record, decide what next.

``deliver(event_id, attempt, ctx)`` makes attempt number ``attempt`` of one event:

1. An event no longer pending (delivered, failed) is left alone: the message is stale.
2. Order: a ``job.completed`` waits while the same job's ``job.started`` is still pending. It is
   not attempted; its row is made due again when the start event's next attempt is (at most
   ``ORDER_RECHECK_MAX_S`` later), and the start event wakes it the moment it is delivered or
   given up. So a consumer never sees completed before started.
3. The attempt is claimed by inserting its row in the delivery log (a duplicated message loses
   the claim and does nothing), signed with the key's secret(s) and POSTed (10 s timeout).
4. 2xx: delivered. 410 Gone: failed, no more retries. Otherwise the next attempt is due after
   the next delay of ``LOUPE_WEBHOOK_RETRY_SCHEDULE`` (±20 % jitter), or after the receiver's
   ``Retry-After`` on 429/503; when the schedule is used up, failed. The result and the next
   step are written in one transaction, fenced by the claim.

A retry is never a Celery countdown: its due time is written to the event's row, and beat's
sweep publishes it when it comes (``services/webhooks/dispatch.py``); only an attempt due at
once is published here. Nothing here touches the job: a webhook failure never changes a job.
"""

from __future__ import annotations

import enum
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.clock import utcnow
from services.errors import NotFound, Unavailable
from services.net.webhook_urls import Resolver, system_resolver
from services.settings import Settings
from services.webhooks.dispatch import claim_window, dispatch
from services.webhooks.queue import WebhookQueue
from services.webhooks.service import get_or_create_secret
from services.webhooks.signing import signature_headers
from services.webhooks.store import WebhookStore
from services.webhooks.types import AttemptResult, EventState, EventType, NextStep, WebhookEvent
from workers.webhook_sender import post_webhook

log = logging.getLogger("loupe.webhooks")

ORDER_RECHECK_MAX_S = 60.0
"""Longest a waiting completed event sleeps before it looks at its start event again."""
JITTER = 0.2
RETRY_AFTER_MAX_S = 86400.0


class DeliveryOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"  # gave up: 410, or the schedule is used up
    WAITING = "waiting"  # an earlier event of the same job is not finished yet
    SKIPPED = "skipped"  # stale or duplicate message


@dataclass(frozen=True)
class WebhookContext:
    """What :func:`deliver` uses (the light worker's root builds it)."""

    settings: Settings
    store: WebhookStore
    queue: WebhookQueue
    clock: Callable[[], datetime] = utcnow
    resolver: Resolver = system_resolver
    jitter: Callable[[float], float] = field(
        default=lambda delay: delay * random.uniform(1 - JITTER, 1 + JITTER)
    )


def deliver(event_id: str, attempt: int, ctx: WebhookContext) -> DeliveryOutcome:
    """Make attempt ``attempt`` of event ``event_id``. Safe to call twice with the same args."""
    try:
        event = ctx.store.get_event(event_id)
    except NotFound:
        log.warning("webhook event %s does not exist; dropping the message", event_id)
        return DeliveryOutcome.SKIPPED
    if event.state is not EventState.PENDING:
        return DeliveryOutcome.SKIPPED
    blocker = _pending_predecessor(event, ctx)
    if blocker is not None:
        _wait_for(event, blocker, ctx)
        return DeliveryOutcome.WAITING
    return _attempt(event, attempt, ctx)


def _attempt(event: WebhookEvent, attempt: int, ctx: WebhookContext) -> DeliveryOutcome:
    now, window = ctx.clock(), claim_window(ctx.settings.webhook_timeout_seconds)
    if not ctx.store.claim_attempt(event.id, attempt, now, now - window, now + window):
        log.info("webhook %s attempt %d: duplicate message ignored", event.id, attempt)
        return DeliveryOutcome.SKIPPED
    result = _post(event, ctx, now)
    outcome, then = _decide(event, attempt, result, ctx)
    if not ctx.store.complete_attempt(event.id, attempt, now, ctx.clock(), result, then):
        log.warning("webhook %s attempt %d: claim taken over; result dropped", event.id, attempt)
        return DeliveryOutcome.SKIPPED
    log.info(
        "webhook %s (%s, job %s) attempt %d: %s",
        event.id, event.type.value, event.job_id, attempt, result.http_status or result.error,
    )  # fmt: skip
    _after(event, then, ctx)
    return outcome


def _post(event: WebhookEvent, ctx: WebhookContext, now: datetime) -> AttemptResult:
    secret = get_or_create_secret(ctx.store, event.owner_id, now)
    # Compact and key-ordered as stored: every attempt of an event sends the same bytes.
    body = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False)
    headers = signature_headers(secret.signing_secrets(now), event.id, now, body)
    return post_webhook(event.url, body.encode(), headers, ctx.settings, ctx.resolver)


def _decide(
    event: WebhookEvent, attempt: int, result: AttemptResult, ctx: WebhookContext
) -> tuple[DeliveryOutcome, NextStep]:
    """What the attempt's result means, and what follows it."""
    if result.delivered:
        return DeliveryOutcome.DELIVERED, NextStep(EventState.DELIVERED)
    if result.http_status == 410:
        log.info("webhook %s: receiver answered 410 Gone; no more retries", event.id)
        return DeliveryOutcome.FAILED, NextStep(EventState.FAILED)
    delay = next_delay(ctx.settings.webhook_retry_schedule, attempt - event.run_first_attempt + 1)
    if delay is None:
        log.warning("webhook %s: giving up after attempt %d", event.id, attempt)
        return DeliveryOutcome.FAILED, NextStep(EventState.FAILED)
    delay = ctx.jitter(delay)
    if result.http_status in (429, 503) and result.retry_after_seconds is not None:
        delay = min(result.retry_after_seconds, RETRY_AFTER_MAX_S)
    due = ctx.clock() + timedelta(seconds=delay)
    return DeliveryOutcome.RETRY_SCHEDULED, NextStep(EventState.PENDING, due)


def next_delay(schedule: tuple[float, ...], attempts_made: int) -> float | None:
    """Seconds before the next attempt after ``attempts_made`` attempts of a run, or None when
    the schedule is used up. ``schedule[i]`` is the wait before attempt ``i + 1``."""
    if attempts_made >= len(schedule):
        return None
    return schedule[attempts_made]


def _after(event: WebhookEvent, then: NextStep, ctx: WebhookContext) -> None:
    """Publish what is due at once: a retry with no wait, or the events that waited for this
    one. A later retry is left to the sweep."""
    if not then.final:
        if then.due is not None and then.due <= ctx.clock():
            _dispatch(event.id, ctx)
        return
    # Wake the job's later events that wait for this one (see ``_wait_for``).
    for later in ctx.store.events_for_job(event.job_id):
        if later.type.rank > event.type.rank and later.state is EventState.PENDING:
            ctx.store.schedule_next(later.id, ctx.clock())
            _dispatch(later.id, ctx)


def _dispatch(event_id: str, ctx: WebhookContext) -> None:
    window = claim_window(ctx.settings.webhook_timeout_seconds)
    try:
        dispatch(ctx.store, ctx.queue, event_id, ctx.clock(), window)
    except Unavailable:
        log.warning("broker unavailable; the sweep publishes webhook %s when it is back", event_id)


def _pending_predecessor(event: WebhookEvent, ctx: WebhookContext) -> WebhookEvent | None:
    if event.type is EventType.STARTED:
        return None
    for earlier in ctx.store.events_for_job(event.job_id):
        if earlier.type.rank < event.type.rank and earlier.state is EventState.PENDING:
            return earlier
    return None


def _wait_for(event: WebhookEvent, blocker: WebhookEvent, ctx: WebhookContext) -> None:
    """Make ``event`` due when ``blocker`` is due again (1 s to ``ORDER_RECHECK_MAX_S`` from
    now). ``_after`` of the blocker also wakes it; this recheck covers a wake-up that raced
    with our look at the blocker."""
    now = ctx.clock()
    wait = ((blocker.next_attempt_at or now) - now).total_seconds() + 1
    ctx.store.schedule_next(
        event.id, now + timedelta(seconds=min(max(wait, 1.0), ORDER_RECHECK_MAX_S))
    )
