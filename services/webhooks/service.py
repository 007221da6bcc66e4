"""Webhook secrets, the delivery log and redelivery, for the API."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.errors import Conflict, Unavailable
from services.jobs.store import JobReader
from services.settings import Settings
from services.webhooks.dispatch import claim_window, dispatch
from services.webhooks.queue import WebhookQueue
from services.webhooks.store import WebhookStore
from services.webhooks.types import DeliveryAttempt, WebhookEvent, WebhookSecret, new_secret

log = logging.getLogger("loupe.webhooks")


@dataclass(frozen=True)
class EventLog:
    """An event and every attempt to deliver it, oldest first."""

    event: WebhookEvent
    attempts: list[DeliveryAttempt]


def get_or_create_secret(store: WebhookStore, owner_id: str, now: datetime) -> WebhookSecret:
    """The key's signing secret, created on first use (by the API or a worker)."""
    return store.get_secret(owner_id) or store.create_secret(owner_id, new_secret(), now)


class WebhookService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: WebhookStore,
        jobs: JobReader,
        queue: WebhookQueue,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._store = store
        self._jobs = jobs
        self._queue = queue
        self._clock = clock

    def secret(self, owner_id: str) -> WebhookSecret:
        return get_or_create_secret(self._store, owner_id, self._clock())

    def rotate(self, owner_id: str) -> WebhookSecret:
        """A new current secret; the old one keeps signing for the overlap window."""
        now = self._clock()
        get_or_create_secret(self._store, owner_id, now)
        overlap = timedelta(seconds=self._settings.webhook_secret_overlap_seconds)
        return self._store.rotate_secret(owner_id, new_secret(), now, now + overlap)

    def deliveries(self, job_id: str, owner_id: str) -> list[EventLog]:
        """The job's events with their attempts (404 for another key's job)."""
        self._jobs.get_for_owner(job_id, owner_id)
        events = self._store.events_for_job(job_id)
        attempts = self._store.attempts_for([e.id for e in events])
        return [EventLog(e, attempts[e.id]) for e in events]

    def redeliver(self, job_id: str, owner_id: str) -> EventLog:
        """Send the job's latest event again: a new attempt with the same ``webhook-id``, due now.

        The redelivery runs the full retry schedule again if it fails. 409 if the job has no
        webhook events. With the broker down it is still accepted: the event is due in SQL, and
        beat's sweep publishes it once the broker is back.
        """
        self._jobs.get_for_owner(job_id, owner_id)
        events = self._store.events_for_job(job_id)
        if not events:
            raise Conflict(
                f"Job {job_id} has no webhook events to redeliver.", code="no_webhook_events"
            )
        latest = events[-1]
        now = self._clock()
        self._store.restart_event(latest.id, self._store.last_attempt_number(latest.id) + 1, now)
        self._publish(latest.id, now)
        event = self._store.get_event(latest.id)
        return EventLog(event, self._store.attempts_for([event.id])[event.id])

    def _publish(self, event_id: str, now: datetime) -> None:
        window = claim_window(self._settings.webhook_timeout_seconds)
        try:
            dispatch(self._store, self._queue, event_id, now, window)
        except Unavailable:
            log.warning("broker unavailable; the sweep publishes redelivery %s", event_id)
