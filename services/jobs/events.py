"""Job events: what happens after a job's state change is committed.

Whoever commits a state change (the worker pipeline, or the API when a queued job is canceled)
calls :meth:`JobEvents.job_changed` with the job as now stored. Sinks (long-poll notifications,
webhooks, metrics) decide from ``job.status`` what the change means: ``running`` is a start,
a terminal status is a completion. A sink failure is logged and never changes the job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from services.jobs.types import Job

log = logging.getLogger("loupe.events")


class JobEvents(Protocol):
    def job_changed(self, job: Job) -> None: ...


class NoJobEvents:
    """A sink that does nothing."""

    def job_changed(self, job: Job) -> None:
        return None


class FanOutJobEvents:
    """Hands each event to every sink in order; one sink's failure never stops the others."""

    def __init__(self, sinks: Sequence[JobEvents]) -> None:
        self._sinks = tuple(sinks)

    def job_changed(self, job: Job) -> None:
        for sink in self._sinks:
            try:
                sink.job_changed(job)
            except Exception:  # a notification must never undo or fail a committed change
                log.exception("job %s: event sink %s failed", job.id, type(sink).__name__)
