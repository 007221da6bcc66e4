"""The light worker's composition root: webhook deliveries and the maintenance sweeps.

No engine, no model, no waiter, no monitor: the light worker (``-Q webhooks,maintenance``)
signs and POSTs webhooks, expires jobs past their TTL, and removes old data.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services import wiring
from services.clock import utcnow
from services.files.service import FileService
from services.jobs.events import JobEvents
from services.jobs.store import JobStore
from services.settings import Settings
from services.storage.blobs import BlobStore
from services.storage.images import DecodeBudget
from services.webhooks.store import SqlWebhookStore
from workers.webhooks import WebhookContext


@dataclass(frozen=True)
class LightContext:
    """What the webhook and maintenance tasks use. ``retention`` zero: keep every job's data.
    ``resources`` holds what :func:`build_light_context` opened."""

    deliveries: WebhookContext
    jobs: JobStore
    events: JobEvents
    blobs: BlobStore
    files: FileService
    retention: timedelta
    clock: Callable[[], datetime] = utcnow
    resources: ExitStack = field(default_factory=ExitStack, repr=False, compare=False)

    def close(self) -> None:
        """Release what :func:`build_light_context` opened, last opened first."""
        self.resources.close()


def build_light_context(settings: Settings) -> LightContext:
    """SQL, S3 (retention), the broker (deliveries) and the job events."""
    with ExitStack() as stack:
        engine = wiring.sql_engine(stack, settings.database_url)
        jobs = wiring.job_store(engine, charge_failed_jobs=settings.charge_failed_jobs)
        blobs = wiring.s3_blobs(stack, settings)
        deliveries = WebhookContext(
            settings=settings,
            store=SqlWebhookStore(engine),
            queue=wiring.webhook_producer(stack, settings),
        )
        return LightContext(
            deliveries=deliveries,
            jobs=jobs,
            events=wiring.job_events(stack, settings, deliveries.store, deliveries.queue),
            blobs=blobs,
            files=wiring.file_service(
                engine, blobs, jobs, settings, DecodeBudget(settings.decode_budget_pixels)
            ),  # it expires files; it never decodes one
            retention=timedelta(seconds=settings.retention_seconds),
            resources=stack.pop_all(),  # last: everything above registered its release
        )
