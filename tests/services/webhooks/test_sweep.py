"""The overdue-webhook sweep re-sends the attempt whose message was lost."""

from __future__ import annotations

from datetime import timedelta

from services.clock import utcnow
from services.webhooks.sweep import requeue_overdue
from services.webhooks.types import AttemptResult, EventState, EventType, NewWebhookEvent
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image

GRACE = timedelta(minutes=5)


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def enqueue_delivery(self, event_id: str, attempt: int, countdown: float = 0) -> None:
        self.sent.append((event_id, attempt))


def _event(client, api, user_key, event_id, due):
    job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
        "id"
    ]
    api.webhook_store.insert_event(
        NewWebhookEvent(
            id=event_id, job_id=job_id, owner_id="o", type=EventType.COMPLETED,
            url="https://example.com/hook", payload={}, created_at=due, next_attempt_at=due,
        )
    )  # fmt: skip


def test_sweep_requeues_the_right_attempt_of_overdue_events(client, api, user_key):
    store, now = api.webhook_store, utcnow()
    long_ago = now - timedelta(hours=1)
    for name in ("never_sent", "retry_lost", "died_mid_post", "delivered"):
        _event(client, api, user_key, name, long_ago)
    _event(client, api, user_key, "not_due_yet", now - timedelta(minutes=1))
    stale = long_ago - timedelta(minutes=5)
    store.claim_attempt("retry_lost", 1, long_ago, stale)
    store.complete_attempt("retry_lost", 1, long_ago, AttemptResult(500, 3))
    store.claim_attempt("died_mid_post", 1, long_ago, stale)  # never completed
    store.finish_event("delivered", EventState.DELIVERED, long_ago)

    queue = RecordingQueue()
    assert requeue_overdue(store, queue, now, GRACE) == 3
    assert sorted(queue.sent) == [("died_mid_post", 1), ("never_sent", 1), ("retry_lost", 2)]
