"""Keeps the leases of the jobs this worker process runs, so only a dead worker's jobs lapse.

One renewing thread per process (not per job): every ``LOUPE_LEASE_RENEW_SECONDS`` one
transaction extends each held (job, attempt) lease to ``LOUPE_LEASE_SECONDS`` from now. A job
whose lease was not renewed is no longer ours (the lost-job sweep handed it out again after our
lease lapsed, or it was finished elsewhere): its ``on_lost`` is called once, so the pipeline
stops it; the attempt fence keeps it from writing a result in any case. A renewal that fails
(the database is down) is logged and retried at the next tick: the lease still runs until it
lapses, which is what lets a short outage pass without losing a running job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from services.clock import utcnow
from services.errors import LoupeError
from services.jobs.store import JobRunStore

log = logging.getLogger("loupe.leases")


class LeaseKeeper:
    """Renews the leases held by this process's running jobs (see the module docstring)."""

    def __init__(
        self,
        store: JobRunStore,
        lease: timedelta,
        interval_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self.lease = lease
        self._interval = interval_seconds
        self._clock = clock
        self._held: dict[str, tuple[int, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, job_id: str, attempt: int, on_lost: Callable[[], None]) -> Iterator[None]:
        """Renew ``job_id``'s lease on ``attempt`` while the block runs; call ``on_lost`` (once)
        if a renewal finds the job no longer running on that attempt."""
        with self._lock:
            self._held[job_id] = (attempt, on_lost)
            self._start_locked()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(job_id, None)

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="loupe-leases", daemon=True)
            self._thread.start()

    def renew_once(self) -> None:
        """Renew every held lease now; report the jobs that are no longer ours."""
        with self._lock:
            held = {job_id: attempt for job_id, (attempt, _) in self._held.items()}
        if not held:
            return
        try:
            renewed = self._store.renew(list(held.items()), self._clock(), self.lease)
        except LoupeError as exc:
            log.warning("lease renewal of %d job(s) failed: %s", len(held), exc.message)
            return
        for job_id in held.keys() - renewed:
            self._lost(job_id, held[job_id])

    def _lost(self, job_id: str, attempt: int) -> None:
        with self._lock:
            entry = self._held.get(job_id)
            if entry is None or entry[0] != attempt:
                return  # finished (and let go) while the renewal ran
            del self._held[job_id]
        log.warning("job %s: lease of attempt %d taken over; stopping it", job_id, attempt)
        entry[1]()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.renew_once()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
