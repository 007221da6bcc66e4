"""The Celery app knows its webhook and maintenance tasks and routes them to their queues."""

from __future__ import annotations

from datetime import timedelta

import redis

from services.jobs.queue import INFERENCE_TASK, RedisQueuedMessages
from services.settings import load_settings
from services.webhooks.queue import DELIVER_TASK
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image
from workers.celery_app import make_celery
from workers.roots import roots_of
from workers.tasks import maintenance
from workers.tasks.maintenance import LOST_JOBS_TASK


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
        assert LOST_JOBS_TASK in tasks
        for name in tasks:
            assert name in app.tasks
            assert app.amqp.router.route({}, name)["queue"].name == "upkeep"
    finally:
        app.close()


def test_the_lost_jobs_sweep_task_publishes_a_lost_job_again(
    client, api, user_key, settings, monkeypatch
):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        assert broker.delete("inference:5") == 1  # the only message: the job's
        monkeypatch.setattr(maintenance, "LOST_JOB_GRACE", timedelta(0))
        app = make_celery(settings)
        try:
            app.loader.import_default_modules()
            assert app.tasks[LOST_JOBS_TASK].apply().get() == 1
        finally:
            roots_of(app).close()
            app.close()
        assert RedisQueuedMessages(broker).held("inference").all == {job_id}
    finally:
        broker.close()
