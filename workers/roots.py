"""The one holder of a worker process's roots, kept on its Celery app.

A worker process builds the root of the tasks it runs, once, on first use (an inference worker
asks at ``worker_init``, to load its model before the first job): an inference worker builds
:class:`~workers.context.WorkerContext`, a light worker :class:`~workers.light.LightContext`,
and neither builds the other's. ``worker_shutdown`` closes what was built. The holder lives on
the Celery app (``app.conf``, beside ``loupe_settings``), so the process has one holder and
no module of ours keeps a root in a global.
"""

from __future__ import annotations

import threading

from celery import Celery

from services.settings import Settings
from workers.context import WorkerContext, build_worker_context
from workers.light import LightContext, build_light_context


class WorkerRoots:
    """This process's roots over ``settings``, each built on first use; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._inference: WorkerContext | None = None
        self._light: LightContext | None = None

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

    def close(self) -> None:
        """Close the roots built so far; a later task builds afresh."""
        with self._lock:
            built, self._inference, self._light = (self._inference, self._light), None, None
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
