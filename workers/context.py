"""What the pipeline needs, built once per worker process from settings."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.catalog.registry import ModelRegistry
from services.catalog.spec import ModelSpec
from services.clock import utcnow
from services.container import Container, build_container
from services.jobs.events import JobEvents, NoJobEvents
from services.jobs.store import JobStore
from services.settings import Settings
from services.storage.blobs import BlobStore
from workers.cancel_watcher import CancelWatcher
from workers.engines.base import Engine
from workers.engines.factory import EnginePool


class EngineProvider(Protocol):
    def get(self, spec: ModelSpec) -> Engine: ...
    def close(self) -> None: ...


@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    blobs: BlobStore
    registry: ModelRegistry
    engines: EngineProvider
    cancels: CancelWatcher
    events: JobEvents = field(default_factory=NoJobEvents)
    clock: Callable[[], datetime] = utcnow
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    container: Container | None = None

    def close(self) -> None:
        self.cancels.close()
        self.engines.close()
        if self.container is not None:
            self.container.close()


def build_worker_context(settings: Settings) -> WorkerContext:
    container = build_container(settings)
    return WorkerContext(
        settings=settings,
        store=container.jobs,
        blobs=container.blobs,
        registry=container.registry,
        engines=EnginePool(settings),
        cancels=CancelWatcher(container.jobs, settings.cancel_poll_ms / 1000),
        events=container.events,
        container=container,
    )


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def get_worker_context(settings: Settings) -> WorkerContext:
    """The process-wide context (built on first use, or at worker start by ``celery_app``)."""
    global _context
    with _context_lock:
        if _context is None:
            _context = build_worker_context(settings)
        return _context


def close_worker_context() -> None:
    global _context
    with _context_lock:
        if _context is not None:
            _context.close()
            _context = None
