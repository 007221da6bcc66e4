"""Celery application factory, tuned for long GPU jobs.

``celery -A workers.celery_app worker -Q inference --pool threads`` uses the module-level ``app``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown

from services.catalog.registry import build_registry
from services.jobs.queue import INFERENCE_TASK, broker_transport_options
from services.settings import Settings, load_settings
from services.webhooks.queue import DELIVER_TASK
from workers.roots import attach_roots, roots_of

log = logging.getLogger("loupe.worker")


def make_celery(settings: Settings) -> Celery:
    app = Celery(
        "loupe",
        broker=settings.broker_url,
        include=["workers.tasks.inference", "workers.tasks.maintenance", "workers.tasks.webhooks"],
    )
    app.conf.update(
        task_acks_late=True,  # a job's message is acked only once the job is finished
        task_reject_on_worker_lost=True,  # a killed worker's job goes back on the queue
        worker_prefetch_multiplier=1,  # never hoard jobs another worker could run
        # One thread per sequence the engine can hold: the threads feed ONE shared engine,
        # which batches them (continuous batching on vLLM).
        worker_pool="threads",
        worker_concurrency=build_registry(settings).worker_concurrency(settings),
        task_ignore_result=True,  # results live in the job store, not in a result backend
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.inference_queue,
        task_routes={
            INFERENCE_TASK: {"queue": settings.inference_queue},
            DELIVER_TASK: {"queue": settings.webhook_queue},
            "loupe.maintenance.*": {"queue": settings.maintenance_queue},
        },
        # ``celery beat`` (one per deployment) schedules the sweeps; a light worker runs them.
        beat_schedule={
            "expire-overdue-jobs": {
                "task": "loupe.maintenance.expire_overdue",
                "schedule": float(settings.expiry_sweep_seconds),
                "options": {"expires": float(settings.expiry_sweep_seconds)},
            },
            # Webhook retries are due times in SQL, not countdown messages: this publishes
            # the attempts that have come due, so it runs often.
            "dispatch-due-webhooks": {
                "task": "loupe.maintenance.dispatch_due_webhooks",
                "schedule": float(settings.webhook_sweep_seconds),
                "options": {"expires": float(settings.webhook_sweep_seconds)},
            },
            "remove-old-job-data": {
                "task": "loupe.maintenance.remove_old_data",
                "schedule": float(settings.retention_sweep_seconds),
                "options": {"expires": float(settings.retention_sweep_seconds)},
            },
        },
        broker_transport_options={
            **broker_transport_options(settings),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.conf.loupe_settings = settings
    attach_roots(app, settings)
    return app


def _settings_of(app: Any) -> Settings:
    settings: Settings = app.conf.loupe_settings
    return settings


@worker_init.connect
def _warm_up(sender: Any = None, **_: Any) -> None:
    """An inference worker builds its root and loads its default model before the first job
    arrives; a light worker builds its root on its first task."""
    settings = _settings_of(sender.app)
    if not settings.job_queues & set(sender.app.amqp.queues.consume_from):
        return  # e.g. the webhooks worker (-Q webhooks): it never runs a model
    ctx = roots_of(sender.app).inference()
    if ctx.registry.default_model not in ctx.registry:
        return
    spec = ctx.registry.get(ctx.registry.default_model)
    log.info("loading model %s (%s engine)", spec.name, spec.engine)
    try:
        ctx.engines.get(spec)
    except Exception as exc:
        # Celery swallows errors raised by signal handlers: a worker that cannot load its model
        # would otherwise take jobs and fail every one of them. Refuse to start instead.
        sys.stderr.write(f"loupe worker: cannot load model {spec.name}: {exc}\n")
        raise SystemExit(1) from exc


@worker_shutdown.connect
def _shut_down(sender: Any = None, **_: Any) -> None:
    roots_of(sender.app).close()


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """Announce this worker in Redis (``workers/heartbeat.py``) once it consumes."""
    from workers.heartbeat import start_heartbeat

    roots_of(sender.app).keep_heartbeat(start_heartbeat(sender))


app = make_celery(load_settings())
