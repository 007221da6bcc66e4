"""Enqueueing jobs: the ``TaskQueue`` Protocol and its Celery adapter.

The API enqueues by task *name* (``send_task``), so ``services`` never imports ``workers``.
Celery is imported lazily: importing ``services`` must not pull in Celery.
"""

from __future__ import annotations

from typing import Any, Protocol

from services.errors import Unavailable
from services.settings import Settings

INFERENCE_TASK = "loupe.inference.run"


class TaskQueue(Protocol):
    def enqueue_inference(self, job_id: str) -> None: ...


class CeleryTaskQueue:
    """Publishes task messages to the Redis broker through a producer-only Celery app."""

    def __init__(self, settings: Settings) -> None:
        from celery import Celery  # lazy on purpose: see the module docstring

        self._queue = settings.inference_queue
        self._app: Any = Celery("loupe-producer", broker=settings.broker_url, set_as_current=False)
        self._app.conf.update(
            broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
            broker_connection_retry_on_startup=True,
            broker_connection_timeout=5,
            task_serializer="json",
        )

    def enqueue_inference(self, job_id: str) -> None:
        try:
            self._app.send_task(
                INFERENCE_TASK,
                args=[job_id],
                queue=self._queue,
                task_id=job_id,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as exc:  # kombu raises many transport error types
            raise Unavailable(f"broker unavailable: {exc}") from exc

    def close(self) -> None:
        self._app.close()
