"""The inference worker's composition root: what the pipeline uses, built once per process."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from services import wiring
from services.catalog.registry import ModelRegistry, build_registry
from services.catalog.spec import ModelSpec
from services.clock import utcnow
from services.jobs.events import JobEvents
from services.jobs.handoff import DispatchNudge
from services.jobs.store import JobStore
from services.settings import Settings
from services.storage.blobs import BlobStore
from services.storage.images import ImageLimits
from services.webhooks.store import SqlWebhookStore
from workers.cancel_watcher import CancelWatcher
from workers.engines.base import Engine
from workers.engines.factory import EnginePool
from workers.lease_keeper import LeaseKeeper


class EngineProvider(Protocol):
    def get(self, spec: ModelSpec) -> Engine: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerContext:
    """Everything :func:`workers.pipeline.process_job` uses. ``resources`` holds what
    :func:`build_worker_context` opened (empty for a context a test assembles itself)."""

    store: JobStore
    blobs: BlobStore
    registry: ModelRegistry
    engines: EngineProvider
    cancels: CancelWatcher
    leases: LeaseKeeper
    events: JobEvents
    image_limits: ImageLimits
    nudge: DispatchNudge  # a finished job frees a slot: the dispatcher may hand out the next
    max_attempts: int = 3  # lost attempts (lapsed leases) before a job ends worker_lost
    clock: Callable[[], datetime] = utcnow
    resources: ExitStack = field(default_factory=ExitStack, repr=False, compare=False)

    def close(self) -> None:
        """Release what :func:`build_worker_context` opened, last opened first."""
        self.resources.close()


def build_worker_context(settings: Settings) -> WorkerContext:
    """SQL, S3, the job events (pub/sub and webhooks) and the engines; no model is loaded
    until the first job (or the worker's warm-up) asks for one."""
    with ExitStack() as stack:
        engine = wiring.sql_engine(stack, settings.database_url)
        store = wiring.job_store(engine, charge_failed_jobs=settings.charge_failed_jobs)
        hooks = wiring.webhook_producer(stack, settings)
        return WorkerContext(
            store=store,
            blobs=wiring.s3_blobs(stack, settings),
            registry=build_registry(settings),
            engines=stack.enter_context(closing(EnginePool(settings))),
            cancels=stack.enter_context(
                closing(CancelWatcher(store, settings.cancel_poll_ms / 1000))
            ),
            leases=stack.enter_context(closing(_lease_keeper(store, settings))),
            events=wiring.job_events(stack, settings, SqlWebhookStore(engine), hooks),
            image_limits=ImageLimits.from_settings(settings),
            nudge=wiring.dispatch_nudge(stack, settings),
            max_attempts=settings.max_attempts,
            resources=stack.pop_all(),  # last: everything above registered its release
        )


def _lease_keeper(store: JobStore, settings: Settings) -> LeaseKeeper:
    lease = timedelta(seconds=settings.lease_seconds)
    return LeaseKeeper(store, lease, settings.lease_renew_seconds)
