"""Webhook delivery (workers/webhooks.py) against a real HTTP receiver on loopback and real SQL.

The Celery queue is replaced by ``RecordingQueue`` (a fake of our ``WebhookQueue`` Protocol) and
the workers' clock by ``StepClock``: ``drain`` runs the published deliveries in order and, when
none is left, moves the clock to the next due attempt and runs beat's sweep there, so the retry
schedule is checked from the SQL due times instead of waiting for them. Every delivery is
verified with the ``standardwebhooks`` library.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.clock import utcnow
from services.errors import Unavailable
from services.jobs.presenter import job_to_public
from services.types import JobStatus
from services.webhooks.dispatch import claim_window, dispatch_due
from services.webhooks.types import EventState, new_secret
from services.webhooks.verify import verify_delivery
from tests.conftest import make_bucket, make_settings
from tests.receiver import Receiver, running_receiver
from tests.support.jobs import insert_job, run_to
from tests.support.keys import new_key
from tests.support.roots import build_test_api
from workers.webhooks import DeliveryOutcome, WebhookContext, deliver

SCHEDULE = (0.0, 5.0, 300.0, 1800.0)


class RecordingQueue:
    """Fake ``WebhookQueue``: records (event_id, attempt); refuses while ``fail``."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, int]] = []
        self.fail = False

    def enqueue_delivery(self, event_id: str, attempt: int) -> None:
        if self.fail:
            raise Unavailable("broker down")
        self.messages.append((event_id, attempt))


class StepClock:
    """The workers' clock: stands still unless moved on (never back)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, when: datetime) -> float:
        """Move to ``when`` if it is later; the seconds moved."""
        moved = max(0.0, (when - self.now).total_seconds())
        self.now = max(self.now, when)
        return moved


@pytest.fixture
def receiver():
    yield from running_receiver()


@pytest.fixture
def queue():
    return RecordingQueue()


@pytest.fixture
def api(database_url, broker_url, s3_server, models_dir, queue):
    settings = make_settings(
        database_url=database_url,
        broker_url=broker_url,
        s3=s3_server,
        bucket=make_bucket(s3_server),
        models_dir=models_dir,
        webhook_allowed_networks="127.0.0.0/8,::1/128",
        webhook_allow_http="true",
        webhook_retry_schedule=",".join(str(s) for s in SCHEDULE),
    )
    c = build_test_api(settings, webhook_queue=queue)
    yield c
    c.close()


@pytest.fixture
def clock():
    return StepClock()


@pytest.fixture
def ctx(api, queue, clock):
    # No jitter, so the due times are exactly the schedule.
    return WebhookContext(
        settings=api.settings,
        store=api.webhook_store,
        queue=queue,
        clock=clock,
        jitter=lambda delay: delay,
    )


@pytest.fixture
def owner(api):
    return new_key(api.keys, "hooks").id


def make_job(api, owner, url, events=("completed",)):
    job = insert_job(api.jobs, owner, utcnow(), webhook_url=url, webhook_events=tuple(events))
    return job.id


def start(api, job_id):
    job = run_to(api.jobs, job_id, "running", utcnow())
    api.events.job_changed(job)
    return job


def succeed(api, job_id):
    finished = run_to(api.jobs, job_id, "succeeded", utcnow(), prompt=5, completion=2, text="a cat")
    api.events.job_changed(finished)
    return finished


def drain(queue: RecordingQueue, ctx, limit: int = 20) -> list[tuple[str, int, float, Any]]:
    """Run the published deliveries in order; when none is left, move the clock to the next
    due attempt and sweep there, as beat would. Each delivery: (event, attempt, the seconds the
    clock moved before it, what it did)."""
    ran: list[tuple[str, int, float, Any]] = []
    waited = 0.0
    while len(ran) < limit:
        if not queue.messages:
            waited = sweep_when_due(queue, ctx)
            if not queue.messages:
                break
        event_id, attempt = queue.messages.pop(0)
        ran.append((event_id, attempt, waited, deliver(event_id, attempt, ctx)))
        waited = 0.0
    return ran


def sweep_when_due(queue: RecordingQueue, ctx) -> float:
    """Move the clock to when the first pending event can be published and run the sweep there;
    the seconds the clock moved (0 when nothing is pending)."""
    (event_id, *_) = ctx.store.due_events(ctx.clock() + timedelta(days=30), 1) or [None]
    if event_id is None:
        return 0.0
    event = ctx.store.get_event(event_id)
    # Due, and (an attempt out, such as a claimed POST) no longer held.
    moved = ctx.clock.advance_to(max(event.next_attempt_at, event.dispatched_until or ctx.clock()))
    dispatch_due(ctx.store, queue, ctx.clock(), claim_window(ctx.settings.webhook_timeout_seconds))
    return moved


def secret_of(api, owner):
    return api.webhooks.secret(owner).secret


def assert_signed(secret: str, request) -> None:
    """``request`` carries ``secret``'s signature for its own id, timestamp and body. (The
    library's ``verify`` also wants the timestamp near the real now; ``StepClock`` moved on.)"""
    msg_id, stamp = request.headers["webhook-id"], int(request.headers["webhook-timestamp"])
    expected = Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(stamp, UTC), request.body.decode()
    )
    assert expected in request.headers["webhook-signature"].split(" ")


def test_completed_event_is_signed_and_carries_the_polling_body(
    api, ctx, queue, owner, receiver: Receiver
):
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    assert queue.messages == []  # "start" was not asked for
    job = succeed(api, job_id)
    ((event_id, attempt, countdown, outcome),) = drain(queue, ctx)
    assert (attempt, countdown, outcome) == (1, 0.0, DeliveryOutcome.DELIVERED)

    (request,) = receiver.requests
    assert request.path == "/hooks/loupe"
    assert request.headers["webhook-id"] == event_id
    assert request.headers["content-type"] == "application/json"
    payload = Webhook(secret_of(api, owner)).verify(request.body, request.headers)
    assert payload["type"] == "job.completed"
    assert payload["data"] == json.loads(json.dumps(job_to_public(job)))
    assert payload["data"]["status"] == "succeeded"
    assert verify_delivery(secret_of(api, owner), request.body, request.headers) == payload

    (log,) = api.webhooks.deliveries(job_id, owner)
    assert log.event.state is EventState.DELIVERED
    (tried,) = log.attempts
    assert tried.http_status == 200
    assert tried.response_body == "answer 200"
    assert tried.latency_ms is not None and tried.latency_ms >= 0
    assert api.jobs.get(job_id).status is JobStatus.SUCCEEDED


def test_tampered_body_and_old_timestamp_fail_verification(
    api, ctx, queue, owner, receiver: Receiver
):
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    drain(queue, ctx)
    (request,) = receiver.requests
    secret = secret_of(api, owner)
    tampered = request.body.replace(b'"succeeded"', b'"failed"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        verify_delivery(secret, tampered, request.headers)
    # A replay with an old timestamp fails even when re-signed correctly for that timestamp.
    old = datetime.now(UTC) - timedelta(minutes=10)
    msg_id = request.headers["webhook-id"]
    replay = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, old, request.body.decode()),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_delivery(secret, request.body, replay)
    with pytest.raises(WebhookVerificationError):
        verify_delivery(new_secret(), request.body, request.headers)


def test_500_twice_then_200_delivers_on_the_third_attempt_with_the_same_id(
    api, ctx, queue, owner, receiver: Receiver
):
    receiver.answers = [500, (500, {}, "x" * 5000)]
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ran = drain(queue, ctx)
    assert [(a, c, o) for _, a, c, o in ran] == [
        (1, 0.0, DeliveryOutcome.RETRY_SCHEDULED),
        (2, 5.0, DeliveryOutcome.RETRY_SCHEDULED),
        (3, 300.0, DeliveryOutcome.DELIVERED),
    ]
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    secret = secret_of(api, owner)
    for request in receiver.requests:
        assert_signed(secret, request)
    (log,) = api.webhooks.deliveries(job_id, owner)
    assert [a.http_status for a in log.attempts] == [500, 500, 200]
    assert len(log.attempts[1].response_body) == 1024  # the first 1 KB only
    assert log.event.state is EventState.DELIVERED


def test_receiver_down_for_a_while_gets_the_event_when_back(
    api, ctx, queue, owner, receiver: Receiver
):
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    receiver.stop()
    succeed(api, job_id)
    first = drain(queue, ctx, limit=2)
    assert [o for *_, o in first] == [DeliveryOutcome.RETRY_SCHEDULED] * 2
    receiver.start()  # same port
    rest = drain(queue, ctx)
    assert [o for *_, o in rest] == [DeliveryOutcome.DELIVERED]
    (log,) = api.webhooks.deliveries(job_id, owner)
    assert [a.http_status for a in log.attempts] == [None, None, 200]
    assert "NewConnectionError" in log.attempts[0].error or "refused" in log.attempts[0].error
    (request,) = receiver.requests
    assert_signed(secret_of(api, owner), request)


def test_schedule_used_up_fails_the_event_but_never_the_job(
    api, ctx, queue, owner, receiver: Receiver
):
    receiver.default = 502
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ran = drain(queue, ctx)
    assert len(ran) == len(SCHEDULE)
    assert ran[-1][3] is DeliveryOutcome.FAILED
    assert queue.messages == []
    (log,) = api.webhooks.deliveries(job_id, owner)
    assert log.event.state is EventState.FAILED
    assert api.jobs.get(job_id).status is JobStatus.SUCCEEDED


def test_410_stops_retries(api, ctx, queue, owner, receiver: Receiver):
    receiver.answers = [410]
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ran = drain(queue, ctx)
    assert [o for *_, o in ran] == [DeliveryOutcome.FAILED]
    assert queue.messages == []
    assert len(receiver.requests) == 1
    (log,) = api.webhooks.deliveries(job_id, owner)
    assert log.event.state is EventState.FAILED
    assert [a.http_status for a in log.attempts] == [410]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(api, ctx, queue, owner, receiver: Receiver, status):
    receiver.answers = [(status, {"Retry-After": "42"}, "slow down")]
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ran = drain(queue, ctx)
    assert [(a, c) for _, a, c, _ in ran] == [(1, 0.0), (2, 42.0)]
    assert ran[-1][3] is DeliveryOutcome.DELIVERED


def test_start_and_completed_arrive_in_order(api, ctx, queue, owner, receiver: Receiver):
    receiver.answers = [500]  # the start event's first attempt fails
    job_id = make_job(api, owner, receiver.url, events=("start", "completed"))
    start(api, job_id)
    succeed(api, job_id)
    (start_id, _), (done_id, _) = queue.messages
    queue.messages.clear()
    assert deliver(start_id, 1, ctx) is DeliveryOutcome.RETRY_SCHEDULED
    # completed must wait while started is still pending: no attempt, due again when the start
    # event's retry is (5 s, plus 1), and no message waits for it in the broker.
    assert deliver(done_id, 1, ctx) is DeliveryOutcome.WAITING
    assert len(receiver.requests) == 1
    assert api.webhook_store.last_attempt_number(done_id) == 0
    assert queue.messages == []
    waiting = api.webhook_store.get_event(done_id)
    assert waiting.next_attempt_at == ctx.clock() + timedelta(seconds=6)
    # The start event's retry (the sweep, 5 s on) wakes the completed one at once.
    ran = drain(queue, ctx)
    assert [(e, a, w, o) for e, a, w, o in ran] == [
        (start_id, 2, 5.0, DeliveryOutcome.DELIVERED),
        (done_id, 1, 0.0, DeliveryOutcome.DELIVERED),
    ]
    types = [json.loads(r.body)["type"] for r in receiver.requests]
    assert types == ["job.started", "job.started", "job.completed"]
    started = json.loads(receiver.requests[0].body)["data"]
    assert started["status"] == "running"
    assert [r.headers["webhook-id"] for r in receiver.requests] == [start_id, start_id, done_id]


def test_redelivered_start_creates_no_second_event(api, ctx, queue, owner, receiver):
    job_id = make_job(api, owner, receiver.url, events=("start",))
    job = start(api, job_id)
    drain(queue, ctx)
    api.events.job_changed(job)  # the same change announced again
    assert queue.messages == []
    assert len(api.webhooks.deliveries(job_id, owner)) == 1
    succeed(api, job_id)  # "completed" not asked for
    assert queue.messages == []
    assert len(receiver.requests) == 1


def test_duplicate_message_posts_once(api, ctx, queue, owner, receiver: Receiver):
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ((event_id, attempt),) = queue.messages
    assert deliver(event_id, attempt, ctx) is DeliveryOutcome.DELIVERED
    assert deliver(event_id, attempt, ctx) is DeliveryOutcome.SKIPPED
    assert len(receiver.requests) == 1


def test_rotation_overlap_keeps_old_secret_consumers_verifying(
    api, ctx, queue, owner, receiver: Receiver
):
    old = secret_of(api, owner)
    new = api.webhooks.rotate(owner).secret
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    drain(queue, ctx)
    (request,) = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify_delivery(old, request.body, request.headers)["type"] == "job.completed"
    assert verify_delivery(new, request.body, request.headers)["type"] == "job.completed"

    # After the overlap only the new secret signs.
    now = utcnow()
    api.webhook_store.rotate_secret(owner, new, now, now - timedelta(seconds=1))
    assert api.webhooks.redeliver(job_id, owner).event.state is EventState.PENDING
    drain(queue, ctx)
    later = receiver.requests[1]
    assert later.headers["webhook-id"] == request.headers["webhook-id"]
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    verify_delivery(new, later.body, later.headers)
    with pytest.raises(WebhookVerificationError):
        verify_delivery(old, later.body, later.headers)


def test_redeliver_is_a_new_attempt_with_the_same_webhook_id(
    api, ctx, queue, owner, receiver: Receiver
):
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    drain(queue, ctx)
    log = api.webhooks.redeliver(job_id, owner)
    assert queue.messages == [(log.event.id, 2)]
    drain(queue, ctx)
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == log.event.id
    assert first.body == second.body
    (log,) = api.webhooks.deliveries(job_id, owner)
    assert [a.attempt for a in log.attempts] == [1, 2]
    assert log.event.state is EventState.DELIVERED


def test_connect_time_check_refuses_a_host_that_now_resolves_inside(
    api, ctx, queue, owner, receiver: Receiver
):
    # Accepted at submit (public answer), rebinds to loopback before delivery: refused,
    # nothing is sent. The allowlist is dropped so loopback is forbidden again.
    strict = make_settings(
        database_url=api.settings.database_url,
        broker_url=api.settings.broker_url,
        s3=_S3(api.settings),
        bucket=api.settings.s3_bucket,
        models_dir=api.settings.models_dir,
        webhook_allow_http="true",
        webhook_retry_schedule="0",
    )
    job_id = make_job(api, owner, f"http://rebind.example:{receiver.port}/x")
    start(api, job_id)
    succeed(api, job_id)
    rebinding = WebhookContext(
        settings=strict,
        store=api.webhook_store,
        queue=queue,
        resolver=lambda host, port: ["127.0.0.1"],
    )
    ((event_id, attempt),) = queue.messages
    assert deliver(event_id, attempt, rebinding) is DeliveryOutcome.FAILED
    assert receiver.requests == []
    (log,) = api.webhooks.deliveries(job_id, owner)
    assert "loopback" in log.attempts[0].error


class _S3:
    """The S3 part of ``make_settings`` from existing settings."""

    def __init__(self, settings):
        self.endpoint_url = settings.s3_endpoint_url
        self.access_key_id = settings.s3_access_key_id
        self.secret_access_key = settings.s3_secret_access_key


def test_broker_down_at_event_time_never_changes_the_job_and_the_sweep_sends_later(
    api, ctx, queue, owner, receiver
):
    queue.fail = True
    job_id = make_job(api, owner, receiver.url, events=("start", "completed"))
    start(api, job_id)  # FanOutJobEvents logs the sink failure and carries on
    finished = succeed(api, job_id)
    assert finished.status is JobStatus.SUCCEEDED
    assert api.jobs.get(job_id).status is JobStatus.SUCCEEDED
    queue.fail = False  # the broker is back: the events are still due in SQL
    ran = drain(queue, ctx)
    assert [o for *_, o in ran] == [DeliveryOutcome.DELIVERED] * 2
    types = [json.loads(r.body)["type"] for r in receiver.requests]
    assert types == ["job.started", "job.completed"]


def test_a_retry_waits_in_sql_and_the_sweep_publishes_it_when_due(
    api, ctx, queue, owner, receiver: Receiver
):
    receiver.answers = [500]
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ((event_id, attempt),) = queue.messages
    queue.messages.clear()
    assert deliver(event_id, attempt, ctx) is DeliveryOutcome.RETRY_SCHEDULED
    assert queue.messages == []  # no countdown message: the retry is a due time in SQL
    event = api.webhook_store.get_event(event_id)
    assert event.next_attempt_at == ctx.clock() + timedelta(seconds=SCHEDULE[1])
    window = claim_window(ctx.settings.webhook_timeout_seconds)
    early = event.next_attempt_at - timedelta(seconds=1)
    assert dispatch_due(ctx.store, queue, early, window) == 0
    assert dispatch_due(ctx.store, queue, event.next_attempt_at, window) == 1
    assert dispatch_due(ctx.store, queue, event.next_attempt_at, window) == 0  # taken once
    assert queue.messages == [(event_id, 2)]


def test_a_retry_due_at_once_is_published_without_the_sweep(
    api, ctx, queue, owner, receiver: Receiver
):
    receiver.answers = [(503, {"Retry-After": "0"}, "now")]
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ((event_id, attempt),) = queue.messages
    queue.messages.clear()
    assert deliver(event_id, attempt, ctx) is DeliveryOutcome.RETRY_SCHEDULED
    assert queue.messages == [(event_id, 2)]
    assert deliver(event_id, 2, ctx) is DeliveryOutcome.DELIVERED


def test_an_attempt_whose_worker_died_mid_post_goes_again_after_its_claim_window(
    api, ctx, queue, owner, receiver: Receiver
):
    job_id = make_job(api, owner, receiver.url)
    start(api, job_id)
    succeed(api, job_id)
    ((event_id, attempt),) = queue.messages
    queue.messages.clear()
    window = claim_window(ctx.settings.webhook_timeout_seconds)
    now = ctx.clock()
    # A worker claimed the attempt and died mid-POST: nothing recorded, nothing acked.
    assert ctx.store.claim_attempt(event_id, attempt, now, now - window, now + window)
    assert deliver(event_id, attempt, ctx) is DeliveryOutcome.SKIPPED  # a duplicate message
    assert dispatch_due(ctx.store, queue, now + window - timedelta(seconds=1), window) == 0
    ran = drain(queue, ctx)
    assert [(a, w, o) for _, a, w, o in ran] == [
        (attempt, window.total_seconds(), DeliveryOutcome.DELIVERED)
    ]
    (log,) = api.webhooks.deliveries(job_id, owner)
    assert [(a.attempt, a.http_status) for a in log.attempts] == [(1, 200)]
    assert len(receiver.requests) == 1  # the dead worker's POST never reached the receiver
