"""Worker heartbeats: a daemon thread that keeps this process's record alive in Redis.

Started when the Celery worker is ready (``worker_ready``) and stopped at shutdown
(``worker_shutdown``), which also deletes the record. Every ``LOUPE_HEARTBEAT_SECONDS`` it
rewrites ``loupe:workers:<host>:<pid>`` (see ``services.admin.heartbeats``) with a TTL of
``LOUPE_HEARTBEAT_TTL_SECONDS``: a killed worker vanishes from the admin views within the TTL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from services.admin.heartbeats import RedisHeartbeats
from services.admin.types import WorkerInfo
from services.catalog.registry import build_registry
from services.clock import utcnow
from services.errors import LoupeError
from services.settings import Settings

log = logging.getLogger("loupe.heartbeat")


class SlotCounter:
    """Jobs in flight in this process (the task shell wraps each job in :meth:`track`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        with self._lock:
            self._n += 1
        try:
            yield
        finally:
            with self._lock:
                self._n -= 1

    @property
    def value(self) -> int:
        with self._lock:
            return self._n


IN_FLIGHT = SlotCounter()


class Heartbeat:
    """Writes ``info`` (with fresh ``last_seen`` and ``slots_in_use``) every ``interval`` s."""

    def __init__(
        self,
        store: RedisHeartbeats,
        info: WorkerInfo,
        *,
        interval: float,
        ttl: int,
        in_flight: Callable[[], int] = lambda: IN_FLIGHT.value,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._info = info
        self._interval = interval
        self._ttl = ttl
        self._in_flight = in_flight
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loupe-heartbeat", daemon=True)

    @property
    def info(self) -> WorkerInfo:
        return self._info

    def beat(self) -> None:
        """Write one heartbeat now; a Redis failure is logged, the next beat retries."""
        info = replace(self._info, last_seen=self._clock(), slots_in_use=self._in_flight())
        try:
            self._store.beat(info, self._ttl)
        except LoupeError as exc:
            log.warning("heartbeat not written: %s", exc.message)

    def start(self) -> None:
        """Beat once (the worker is listed at once), then keep beating on a daemon thread."""
        self.beat()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def stop(self) -> None:
        """Stop beating and delete the record (a clean shutdown leaves at once)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 5)
        try:
            self._store.remove(self._info.host, self._info.pid)
        except LoupeError as exc:
            log.warning("heartbeat not removed (it expires in %s s): %s", self._ttl, exc.message)
        self._store.close()


def worker_info(settings: Settings, queues: list[str], slots: int) -> WorkerInfo:
    """This process as a heartbeat describes it: its default model and that model's engine,
    or none for a worker that does not run inference (the webhooks/maintenance worker)."""
    registry = build_registry(settings)
    runs_models = bool(settings.job_queues & set(queues))
    model = registry.default_model if runs_models else ""
    engine = registry.get(model).engine if model in registry else ""
    now = utcnow()
    return WorkerInfo(
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=tuple(sorted(queues)),
        engine=str(engine),
        model=model,
        slots=slots,
        slots_in_use=0,
        started_at=now,
        last_seen=now,
    )


def start_heartbeat(consumer: Any) -> Heartbeat:
    """Start this process's heartbeat from Celery's ``worker_ready`` sender (the consumer); the
    caller keeps it and stops it at shutdown (``workers.roots.WorkerRoots``)."""
    settings: Settings = consumer.app.conf.loupe_settings
    queues = list(consumer.app.amqp.queues.consume_from or [settings.inference_queue])
    slots = int(consumer.controller.concurrency)
    heartbeat = Heartbeat(
        RedisHeartbeats.from_url(settings.broker_url),
        worker_info(settings, queues, slots),
        interval=settings.heartbeat_seconds,
        ttl=settings.heartbeat_ttl_seconds,
    )
    heartbeat.start()
    log.info(
        "heartbeat every %s s (ttl %s s)",
        settings.heartbeat_seconds,
        settings.heartbeat_ttl_seconds,
    )
    return heartbeat
