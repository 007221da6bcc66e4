"""Free capacity of the workers, from their heartbeats (``workers/heartbeat.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.admin.heartbeats import RedisHeartbeats
from services.admin.types import WorkerInfo

# Heartbeats change every few seconds: a dispatch pass reads them at most this often.
CACHE_SECONDS = 1.0


class HeartbeatSlots:
    """``WorkerSlots`` from the live workers' heartbeats: each one's slots, for each queue it
    consumes. A worker whose heartbeat lapsed counts for nothing."""

    def __init__(
        self, heartbeats: RedisHeartbeats, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._heartbeats = heartbeats
        self._clock = clock
        self._workers: list[WorkerInfo] = []
        self._read_at: float | None = None

    def slots(self, queue: str) -> int:
        return sum(w.slots for w in self._live() if queue in w.queues)

    def _live(self) -> list[WorkerInfo]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= CACHE_SECONDS:
            self._workers = self._heartbeats.live()
            self._read_at = now
        return self._workers
