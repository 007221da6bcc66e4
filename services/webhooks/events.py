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
from services.webhooks.queue import WebhookQueue
from services.webhooks.store import WebhookStore
from services.webhooks.types import EventState, EventType, NewWebhookEvent, new_event_id


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
    """A ``JobEvents`` sink: store the event, then enqueue its first delivery attempt."""

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
        if type_ is None or job.webhook_url is None:
            return
        now = self._clock()
        delay = self._settings.webhook_retry_schedule[0]
        created = self._store.insert_event(
            NewWebhookEvent(
                id=new_event_id(),
                job_id=job.id,
                owner_id=job.owner_id,
                type=type_,
                url=job.webhook_url,
                payload={
                    "type": type_.value,
                    "timestamp": _timestamp(now),
                    "data": job_to_public(job),
                },
                created_at=now,
                next_attempt_at=now + timedelta(seconds=delay),
            )
        )
        event = self._store.find_event(job.id, type_)
        if event is None:
            return
        if not created and (
            event.state is not EventState.PENDING or self._store.last_attempt_number(event.id)
        ):
            return  # a repeated notification (redelivered start): the event is on its way
        # A repeat of a never-attempted event enqueues again: the first enqueue may have failed
        # after the insert; the attempt claim makes a duplicate message harmless.
        self._queue.enqueue_delivery(event.id, 1, countdown=delay)
