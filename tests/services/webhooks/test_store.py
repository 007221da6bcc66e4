"""SqlWebhookStore pieces the other modules read: delivery outcomes for /metrics."""

from __future__ import annotations

from datetime import timedelta

from services.clock import utcnow
from services.webhooks.types import AttemptResult, EventState, EventType, NewWebhookEvent, NextStep
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image


def test_store_counts_attempt_outcomes(client, api, user_key):
    store = api.webhook_store
    assert store.attempt_outcomes() == {}
    now = utcnow()
    for n in range(2):
        job_id = client.post("/v1/jobs", json=chat_body(make_image()), headers=auth(user_key)).json[
            "id"
        ]
        store.insert_event(
            NewWebhookEvent(
                id=f"msg_{n}", job_id=job_id, owner_id="o", type=EventType.COMPLETED,
                url="https://example.com/hook", payload={}, created_at=now,
            )
        )  # fmt: skip
    stale, held = now - timedelta(minutes=5), now + timedelta(minutes=1)
    retry = NextStep(EventState.PENDING, now)
    for attempt, status in ((1, 500), (2, 200)):
        assert store.claim_attempt("msg_0", attempt, now, stale, held)
        store.complete_attempt("msg_0", attempt, now, now, AttemptResult(status, 5), retry)
    store.claim_attempt("msg_1", 1, now, stale, held)
    timed_out = AttemptResult(None, 10_000, error="timed out")
    store.complete_attempt("msg_1", 1, now, now, timed_out, retry)
    store.claim_attempt("msg_1", 2, now, stale, held)  # a POST in progress
    assert store.attempt_outcomes() == {"success": 1, "failure": 2, "in_flight": 1}
