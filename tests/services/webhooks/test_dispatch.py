"""The SQL schedule of webhook deliveries (services/webhooks/dispatch.py) on real SQL: which
attempt of which event is published when, and never twice by two publishers.

The clock is explicit (``T0`` onwards): nothing here waits. The broker is ``RecordingQueue``, a
fake of our ``WebhookQueue`` Protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from services.db import make_engine
from services.errors import Unavailable
from services.webhooks.dispatch import REDISPATCH_AFTER, claim_window, dispatch_due
from services.webhooks.store import SqlWebhookStore
from services.webhooks.types import (
    AttemptResult,
    EventState,
    EventType,
    NewWebhookEvent,
    NextStep,
)
from tests.support.jobs import insert_job
from tests.support.keys import new_key
from tests.support.stores import sql_job_store

T0 = datetime(2030, 1, 1, tzinfo=UTC)
WINDOW = claim_window(10)  # a 10 s POST timeout: 70 s
SECOND = timedelta(seconds=1)


class RecordingQueue:
    """Fake ``WebhookQueue``: records (event_id, attempt); refuses while ``down``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.down = False
        self._lock = threading.Lock()

    def enqueue_delivery(self, event_id: str, attempt: int) -> None:
        if self.down:
            raise Unavailable("broker down")
        with self._lock:
            self.sent.append((event_id, attempt))


class Events:
    """Webhook events of fresh jobs, in a real database, and the store under test."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        self.store = SqlWebhookStore(self.engine)
        self._jobs = sql_job_store(self.engine)
        self._owner = new_key(self.engine).id

    def add(self, event_id: str, due: datetime | None) -> str:
        """A pending ``job.completed`` event of a new job, its next attempt due at ``due``."""
        job = insert_job(self._jobs, self._owner, T0 - timedelta(hours=1))
        self.store.insert_event(
            NewWebhookEvent(
                id=event_id, job_id=job.id, owner_id=self._owner, type=EventType.COMPLETED,
                url="https://example.com/hook", payload={}, created_at=T0, next_attempt_at=due,
            )
        )  # fmt: skip
        return event_id

    def attempt(self, event_id: str, attempt: int, at: datetime, then: NextStep | None) -> None:
        """Claim attempt ``attempt`` at ``at``; complete it with a 500 and ``then`` unless None."""
        assert self.store.claim_attempt(event_id, attempt, at, at - WINDOW, at + WINDOW)
        if then is not None:
            self.store.complete_attempt(event_id, attempt, at, at, AttemptResult(500, 3), then)


@pytest.fixture
def events(database_url: str) -> Iterator[Events]:
    built = Events(database_url)
    yield built
    built.engine.dispose()


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


def sweep(events: Events, queue: RecordingQueue, now: datetime) -> list[tuple[str, int]]:
    """What one sweep at ``now`` publishes."""
    queue.sent.clear()
    dispatch_due(events.store, queue, now, WINDOW)
    return sorted(queue.sent)


def test_the_sweep_publishes_the_right_attempt_of_each_due_event(events, queue):
    events.add("never_sent", T0 - SECOND)
    events.add("retry_due", None)
    events.attempt("retry_due", 1, T0 - timedelta(minutes=10), NextStep(EventState.PENDING, T0))
    events.add("retry_later", None)
    events.attempt("retry_later", 1, T0 - SECOND, NextStep(EventState.PENDING, T0 + SECOND))
    events.add("delivered", None)
    events.attempt("delivered", 1, T0 - SECOND, NextStep(EventState.DELIVERED))
    events.add("not_due_yet", T0 + timedelta(minutes=5))
    events.add("in_flight", T0 - timedelta(seconds=30))
    events.attempt("in_flight", 1, T0 - timedelta(seconds=30), None)

    assert sweep(events, queue, T0) == [("never_sent", 1), ("retry_due", 2)]
    assert events.store.get_event("retry_due").dispatched_until == T0 + REDISPATCH_AFTER
    assert sweep(events, queue, T0 + SECOND) == [("retry_later", 2)]


def test_a_published_attempt_is_not_published_again_until_it_is_taken_for_lost(events, queue):
    events.add("e", T0)
    assert sweep(events, queue, T0) == [("e", 1)]
    assert sweep(events, queue, T0 + SECOND) == []
    assert sweep(events, queue, T0 + REDISPATCH_AFTER - SECOND) == []
    # Nobody claimed it: the message was lost. The same attempt goes again.
    assert sweep(events, queue, T0 + REDISPATCH_AFTER) == [("e", 1)]


def test_a_claimed_attempt_is_left_alone_until_its_claim_is_stale(events, queue):
    events.add("e", T0)
    assert sweep(events, queue, T0) == [("e", 1)]
    events.attempt("e", 1, T0 + SECOND, None)  # its worker dies mid-POST
    assert sweep(events, queue, T0 + SECOND + WINDOW - SECOND) == []
    assert sweep(events, queue, T0 + SECOND + WINDOW) == [("e", 1)]


def test_a_stale_claim_is_taken_over_once_and_the_old_worker_cannot_record(events):
    events.add("e", T0)
    store, claimed = events.store, T0
    assert store.claim_attempt("e", 1, claimed, claimed - WINDOW, claimed + WINDOW)
    later = claimed + WINDOW
    assert not store.claim_attempt("e", 1, later - SECOND, later - SECOND - WINDOW, later)
    assert store.claim_attempt("e", 1, later, later - WINDOW, later + WINDOW)
    assert not store.claim_attempt("e", 1, later, later - WINDOW, later + WINDOW)
    done = NextStep(EventState.DELIVERED)
    assert not store.complete_attempt("e", 1, claimed, later, AttemptResult(200, 5), done)
    assert store.complete_attempt("e", 1, later, later, AttemptResult(200, 5), done)
    (attempt,) = store.attempts_for(["e"])["e"]
    assert (attempt.attempted_at, attempt.http_status) == (later, 200)
    assert store.get_event("e").state is EventState.DELIVERED


def test_a_sweep_that_finds_an_attempt_in_flight_holds_it_until_its_claim_is_stale(events, queue):
    # A claim whose hold already ran out while the claim is fresh (the sweep's clock is ahead
    # of the worker's): the attempt may still be sending, so nothing is published.
    events.add("e", T0)
    claimed = T0 + SECOND
    assert events.store.claim_attempt("e", 1, claimed, claimed - WINDOW, claimed)
    assert sweep(events, queue, T0 + timedelta(seconds=2)) == []
    assert events.store.get_event("e").dispatched_until == claimed + WINDOW
    assert sweep(events, queue, claimed + WINDOW) == [("e", 1)]


def test_completing_an_attempt_writes_the_next_step(events):
    events.add("retry", T0)
    events.attempt("retry", 1, T0, NextStep(EventState.PENDING, T0 + timedelta(seconds=300)))
    pending = events.store.get_event("retry")
    assert (pending.state, pending.next_attempt_at) == (
        EventState.PENDING,
        T0 + timedelta(seconds=300),
    )
    assert pending.dispatched_until is None
    events.add("gone", T0)
    events.attempt("gone", 1, T0, NextStep(EventState.FAILED))
    failed = events.store.get_event("gone")
    assert (failed.state, failed.next_attempt_at, failed.finished_at) == (
        EventState.FAILED, None, T0,
    )  # fmt: skip


def test_a_redelivery_publishes_the_first_attempt_of_its_new_run(events, queue):
    events.add("e", T0)
    events.attempt("e", 1, T0, NextStep(EventState.DELIVERED))
    events.store.restart_event("e", 2, T0 + SECOND)
    assert sweep(events, queue, T0 + SECOND) == [("e", 2)]


def test_a_publish_the_broker_refuses_leaves_the_event_due_for_the_next_sweep(events, queue):
    events.add("e", T0)
    queue.down = True
    with pytest.raises(Unavailable):
        dispatch_due(events.store, queue, T0, WINDOW)
    queue.down = False
    assert sweep(events, queue, T0 + SECOND) == [("e", 1)]


def test_sweeps_running_at_once_publish_each_due_attempt_once(events, queue):
    ids = [events.add(f"e{n:02d}", T0) for n in range(20)]
    start = threading.Barrier(4)

    def one_sweep() -> None:
        start.wait()
        dispatch_due(events.store, queue, T0, WINDOW)

    threads = [threading.Thread(target=one_sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(queue.sent) == [(event_id, 1) for event_id in ids]
