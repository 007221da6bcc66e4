"""The Celery app knows its webhook and maintenance tasks and routes them to their queues."""

from __future__ import annotations

from datetime import timedelta

import redis

from services.clock import utcnow
from services.jobs.queue import INFERENCE_TASK
from services.settings import load_settings
from services.webhooks.queue import DELIVER_TASK
from services.webhooks.types import EventType, NewWebhookEvent
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.broker import HeldDelivery, held_deliveries
from tests.support.images import make_image
from workers.celery_app import make_celery
from workers.roots import roots_of
from workers.tasks.maintenance import WEBHOOK_SWEEP_TASK


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


def test_beat_runs_the_webhook_sweep_every_webhook_sweep_seconds():
    app = make_celery(load_settings({"LOUPE_WEBHOOK_SWEEP_SECONDS": "2"}))
    try:
        (entry,) = [e for e in app.conf.beat_schedule.values() if e["task"] == WEBHOOK_SWEEP_TASK]
        assert entry["schedule"] == 2.0
        assert entry["options"] == {"expires": 2.0}  # a missed sweep is not run late
    finally:
        app.close()


def test_the_webhook_sweep_task_publishes_a_due_attempt_with_no_countdown(
    client, api, user_key, settings
):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    now = utcnow()
    later = now + timedelta(hours=1)
    for type_, due in ((EventType.STARTED, now), (EventType.COMPLETED, later)):
        api.webhook_store.insert_event(
            NewWebhookEvent(
                id=f"msg_{type_.filter_name}", job_id=job_id, owner_id="o", type=type_,
                url="https://example.com/hook", payload={}, created_at=now, next_attempt_at=due,
            )
        )  # fmt: skip
    broker = redis.Redis.from_url(settings.broker_url)
    app = make_celery(settings)
    try:
        app.loader.import_default_modules()
        assert app.tasks[WEBHOOK_SWEEP_TASK].apply().get() == 1
        assert app.tasks[WEBHOOK_SWEEP_TASK].apply().get() == 0  # published once
        assert held_deliveries(broker, settings.webhook_queue) == [
            HeldDelivery("msg_start", 1, eta=None, unacked=False)
        ]
    finally:
        roots_of(app).close()
        app.close()
        broker.close()


def test_a_delivery_with_the_database_down_retries_briefly_then_leaves_it_to_the_sweep(
    settings_for,
):
    # Nothing listens on port 1: every query fails as Unavailable. Run eagerly, the task's
    # countdown retries run at once; they stop after UNAVAILABLE_RETRIES.
    down = settings_for(database_url="postgresql://loupe@127.0.0.1:1/loupe")
    app = make_celery(down)
    try:
        app.loader.import_default_modules()
        result = app.tasks[DELIVER_TASK].apply(args=["msg_x", 1])
        assert result.get() == "deferred"
    finally:
        roots_of(app).close()
        app.close()
