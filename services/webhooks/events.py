"""``WebhookEvents``: the job-events sink that turns job state changes into webhook events.

A job that asked for ``start`` gets ``job.started`` when it becomes ``running``; one that asked
for ``completed`` (the default) gets ``job.completed`` when it reaches a terminal status. The
payload is ``{"type", "timestamp", "data"}`` where ``data`` is exactly the polling body at that
moment. One event per (job, type): a redelivered start never makes a second one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from services.jobs.presenter import job_to_public
from services.jobs.types import Job
from services.settings import Settings
from services.types import JobStatus
from services.webhooks.dispatch import claim_window, dispatch
from services.webhooks.queue import WebhookQueue
from services.webhooks.store import WebhookStore
from services.webhooks.types import EventType, NewWebhookEvent, new_event_id


def event_type_for(job: Job) -> EventType | None:
    """The event a job's new status means, if the job asked for it."""
    if job.webhook_url is None:
        return None
    if job.status is JobStatus.RUNNING:
        wanted = EventType.STARTED
    elif job.status.terminal:
        wanted = EventType.COMPLETED
    else:
        return None
    return wanted if wanted.filter_name in job.webhook_events else None


def _timestamp(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class WebhookEvents:
    """A ``JobEvents`` sink: store the event, then publish its first attempt if it is due now."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: WebhookStore,
        queue: WebhookQueue,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._clock = clock

    def job_changed(self, job: Job) -> None:
        type_ = event_type_for(job)
        if type_ is None:
            return
        now = self._clock()
        event_id = self._stored_event_id(job, type_, now)
        if event_id is None:
            return
        # Publishes only an attempt that is due and not out: the first attempt (when the schedule
        # starts at 0), or, for a repeat, one whose publish failed after the insert. A later
        # first attempt, and every retry, is published by beat's sweep when due.
        window = claim_window(self._settings.webhook_timeout_seconds)
        dispatch(self._store, self._queue, event_id, now, window)

    def _stored_event_id(self, job: Job, type_: EventType, now: datetime) -> str | None:
        """The id of the job's event of ``type_``, inserted now unless it exists already (a
        repeated notification, such as a redelivered start, makes no second event)."""
        event = self._new_event(job, type_, now)
        if self._store.insert_event(event):
            return event.id
        existing = self._store.find_event(job.id, type_)
        return None if existing is None else existing.id

    def _new_event(self, job: Job, type_: EventType, now: datetime) -> NewWebhookEvent:
        assert job.webhook_url is not None
        delay = self._settings.webhook_retry_schedule[0]
        return NewWebhookEvent(
            id=new_event_id(),
            job_id=job.id,
            owner_id=job.owner_id,
            type=type_,
            url=job.webhook_url,
            payload={"type": type_.value, "timestamp": _timestamp(now), "data": job_to_public(job)},
            created_at=now,
            next_attempt_at=now + timedelta(seconds=delay),
        )
