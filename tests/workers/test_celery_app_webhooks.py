"""The Celery app knows its webhook and maintenance tasks and routes them to their queues."""

from __future__ import annotations

from services.jobs.queue import INFERENCE_TASK
from services.settings import load_settings
from services.webhooks.queue import DELIVER_TASK
from workers.celery_app import make_celery


def test_make_celery_routes_webhook_deliveries_to_the_webhooks_queue():
    settings = load_settings({"LOUPE_WEBHOOK_QUEUE": "hooks"})
    app = make_celery(settings)
    try:
        assert "workers.tasks.webhooks" in app.conf.include
        assert app.conf.task_routes[DELIVER_TASK] == {"queue": "hooks"}
        assert app.conf.task_routes[INFERENCE_TASK] == {"queue": "inference"}
        app.loader.import_default_modules()
        assert DELIVER_TASK in app.tasks
    finally:
        app.close()


def test_every_beat_sweep_is_a_registered_task_on_the_maintenance_queue():
    app = make_celery(load_settings({"LOUPE_MAINTENANCE_QUEUE": "upkeep"}))
    try:
        app.loader.import_default_modules()
        tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
        assert len(tasks) >= 3  # expiry, retention, webhook sweeps
        for name in tasks:
            assert name in app.tasks
            assert app.amqp.router.route({}, name)["queue"].name == "upkeep"
    finally:
        app.close()
