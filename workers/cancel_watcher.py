"""Watches the job store for cancel requests on the jobs this worker process is running.

One polling thread per process (not per job): each poll is a single indexed query over the
in-flight job ids, so cancel latency is ``LOUPE_CANCEL_POLL_MS``, at a few queries a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from services.errors import LoupeError
from services.jobs.store import JobRunStore

log = logging.getLogger("loupe.cancel")


class CancelWatcher:
    def __init__(self, store: JobRunStore, interval_seconds: float) -> None:
        self._store = store
        self._interval = interval_seconds
        self._callbacks: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, job_id: str, on_cancel: Callable[[], None]) -> Iterator[None]:
        """Call ``on_cancel`` (once) if the job is canceled while the block runs."""
        with self._lock:
            self._callbacks[job_id] = on_cancel
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="loupe-cancel-watcher", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(job_id, None)

    def poll_once(self) -> None:
        with self._lock:
            job_ids = list(self._callbacks)
        if not job_ids:
            return
        try:
            canceled = self._store.cancel_requested(job_ids)
        except LoupeError as exc:
            log.warning("cancel poll failed: %s", exc.message)
            return
        for job_id in canceled:
            with self._lock:
                callback = self._callbacks.pop(job_id, None)
            if callback is not None:
                log.info("job %s: cancel requested, aborting its engine request", job_id)
                callback()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll_once()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
