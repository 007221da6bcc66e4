"""Wiring: build the real adapters for a ``Settings`` once, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from services.auth.keys import KeyStore, SqlKeyStore
from services.db import make_engine
from services.jobs.queue import CeleryTaskQueue, TaskQueue
from services.jobs.service import JobService
from services.jobs.store import JobStore, SqlJobStore
from services.models_registry import ModelRegistry, build_registry
from services.settings import Settings
from services.storage.blobs import BlobStore, S3BlobStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Container:
    settings: Settings
    registry: ModelRegistry
    jobs: JobStore
    keys: KeyStore
    blobs: BlobStore
    queue: TaskQueue
    job_service: JobService
    db_engine: Engine | None = None

    def close(self) -> None:
        if self.db_engine is not None:
            self.db_engine.dispose()
        close = getattr(self.queue, "close", None)
        if close is not None:
            close()


def build_container(
    settings: Settings,
    *,
    blobs: BlobStore | None = None,
    queue: TaskQueue | None = None,
) -> Container:
    """Real adapters chosen by settings; tests may pass their own ``blobs``/``queue``."""
    engine = make_engine(settings.database_url)
    registry = build_registry(settings)
    jobs = SqlJobStore(engine)
    blob_store = blobs if blobs is not None else S3BlobStore.from_settings(settings)
    task_queue = queue if queue is not None else CeleryTaskQueue(settings)
    service = JobService(
        settings=settings,
        store=jobs,
        blobs=blob_store,
        queue=task_queue,
        registry=registry,
        clock=utcnow,
    )
    return Container(
        settings=settings,
        registry=registry,
        jobs=jobs,
        keys=SqlKeyStore(engine),
        blobs=blob_store,
        queue=task_queue,
        job_service=service,
        db_engine=engine,
    )
