"""The Celery app knows the webhook task and routes it to its own queue."""

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
