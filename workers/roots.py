"""The one holder of a worker process's roots, kept on its Celery app.

A worker process builds the root of the tasks it runs, once, on first use (an inference worker
asks at ``worker_init``, to load its model before the first job): an inference worker builds
:class:`~workers.context.WorkerContext`, a light worker :class:`~workers.light.LightContext`,
and neither builds the other's. The holder also keeps the process's heartbeat, started at
``worker_ready``. ``worker_shutdown`` stops the heartbeat and closes what was built. It lives on
the Celery app (``app.conf``, beside ``loupe_settings``), so the process has one holder and
no module of ours keeps a root in a global.
"""

from __future__ import annotations

import threading

from celery import Celery

from services.settings import Settings
from workers.context import WorkerContext, build_worker_context
from workers.heartbeat import Heartbeat
from workers.light import LightContext, build_light_context


class WorkerRoots:
    """This process's roots over ``settings``, each built on first use; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._inference: WorkerContext | None = None
        self._light: LightContext | None = None
        self._heartbeat: Heartbeat | None = None

    def inference(self) -> WorkerContext:
        """The inference tasks' root (engines load lazily, per model)."""
        with self._lock:
            if self._inference is None:
                self._inference = build_worker_context(self._settings)
            return self._inference

    def light(self) -> LightContext:
        """The webhook and maintenance tasks' root."""
        with self._lock:
            if self._light is None:
                self._light = build_light_context(self._settings)
            return self._light

    def keep_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Keep this process's (started) heartbeat; one given before is stopped."""
        with self._lock:
            previous, self._heartbeat = self._heartbeat, heartbeat
        if previous is not None:
            previous.stop()

    def close(self) -> None:
        """Stop the heartbeat (its record is deleted at once) and close the roots built so far;
        a later task builds afresh."""
        with self._lock:
            beat, self._heartbeat = self._heartbeat, None
            built, self._inference, self._light = (self._inference, self._light), None, None
        if beat is not None:
            beat.stop()
        for root in built:
            if root is not None:
                root.close()


def attach_roots(app: Celery, settings: Settings) -> None:
    """Give ``app`` its process's holder (nothing is built yet)."""
    app.conf.loupe_roots = WorkerRoots(settings)


def roots_of(app: Celery) -> WorkerRoots:
    """The holder :func:`attach_roots` gave ``app`` (a task's ``self.app``)."""
    roots: WorkerRoots = app.conf.loupe_roots
    return roots
