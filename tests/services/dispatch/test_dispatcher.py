"""Dispatch passes on real SQL (SQLite and PostgreSQL), with fakes of our broker ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from services.catalog.registry import build_registry
from services.clock import utcnow
from services.db import make_engine, upgrade_to_head
from services.dispatch.dispatcher import Dispatcher, DispatchPorts
from services.dispatch.store import SqlDispatchStore
from services.errors import Unavailable
from services.jobs.backlog import Backlog
from services.jobs.events import NoJobEvents
from services.jobs.queue import HeldMessages
from services.settings import Settings
from services.types import JobStatus, Priority
from services.usage.quotas import SqlQuotaStore
from tests.support.jobs import insert_job, run_to
from tests.support.keys import new_key
from tests.support.stores import sql_job_store

NOW = utcnow()


@dataclass
class Broker:
    """``TaskQueue`` and ``QueuedMessages`` at once: what was published, what it still holds."""

    published: list[tuple[str, Priority, str]] = field(default_factory=list)
    delivered: set[str] = field(default_factory=set)
    down: bool = False

    def enqueue_inference(self, job_id: str, priority: Priority, queue: str | None = None) -> None:
        if self.down:
            raise Unavailable("broker down")
        self.published.append((job_id, priority, queue or "inference"))

    def held(self, queue: str) -> HeldMessages:
        waiting = {job_id for job_id, _, q in self.published if q == queue} - self.delivered
        return HeldMessages(frozenset(waiting), frozenset(self.delivered))

    def ids(self) -> list[str]:
        return [job_id for job_id, _, _ in self.published]


@dataclass
class Board:
    """``BacklogBoard``: the last snapshot per queue."""

    latest: dict[str, Backlog] = field(default_factory=dict)

    def publish(self, queue: str, backlog: Backlog) -> None:
        self.latest[queue] = backlog

    def read(self, queue: str) -> Backlog | None:
        return self.latest.get(queue)


@dataclass
class Slots:
    free: int = 0

    def slots(self, queue: str) -> int:
        return self.free


@dataclass
class Rig:
    dispatcher: Dispatcher
    broker: Broker
    slots: Slots
    engine: Any
    jobs: Any
    clock: list[Any]
    board: Board
    ticks: list[float]

    def key(self, name: str) -> str:
        return new_key(self.engine, name, at=NOW).id

    def queue(self, owner: str, n: int, **build: Any) -> list[str]:
        return [insert_job(self.jobs, owner, self.clock[0], **build).id for _ in range(n)]

    def later(self, seconds: float) -> None:
        self.clock[0] += timedelta(seconds=seconds)


@pytest.fixture
def rig(database_url: str) -> Iterator[Rig]:
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    jobs = sql_job_store(engine)
    broker, slots, clock, board, ticks = Broker(), Slots(), [NOW], Board(), [0.0]
    ports = DispatchPorts(
        store=SqlDispatchStore(engine), jobs=jobs, queue=broker, broker=broker, workers=slots,
        routes=build_registry(Settings()), events=NoJobEvents(), board=board,
    )  # fmt: skip
    dispatcher = Dispatcher(
        ports, margin=2, max_attempts=2, clock=lambda: clock[0], monotonic=lambda: ticks[0]
    )
    yield Rig(dispatcher, broker, slots, engine, jobs, clock, board, ticks)
    engine.dispose()


def test_the_broker_gets_free_slots_plus_the_margin_and_no_more(rig):
    ids = rig.queue(rig.key("a"), 10)
    rig.slots.free = 3
    assert rig.dispatcher.dispatch() == 5
    assert rig.broker.ids() == ids[:5]
    assert rig.dispatcher.dispatch() == 0  # the window is full: handed out counts
    run_to(rig.jobs, ids[0], "running", NOW)  # a worker took one: still in flight
    assert rig.dispatcher.dispatch() == 0
    run_to(rig.jobs, ids[0], "succeeded", NOW)  # finished: a slot is free
    assert rig.dispatcher.dispatch() == 1 and rig.broker.ids()[-1] == ids[5]


def test_a_second_keys_job_goes_out_before_the_first_keys_backlog(rig):
    a, b = rig.key("a"), rig.key("b")
    backlog = rig.queue(a, 300)
    rig.dispatcher.dispatch()  # the window is A's: 2
    rig.later(1)
    (late,) = rig.queue(b, 1)
    run_to(rig.jobs, backlog[0], "succeeded", NOW)
    assert rig.dispatcher.dispatch() == 1
    assert rig.broker.ids()[-1] == late


def test_priority_classes_go_first_whatever_the_key(rig):
    a, b = rig.key("a"), rig.key("b")
    rig.queue(a, 5, priority=Priority.LOW)
    rig.later(1)
    urgent = rig.queue(b, 1, priority=Priority.HIGH)
    rig.dispatcher.dispatch()
    assert rig.broker.published[0] == (urgent[0], Priority.HIGH, "inference")


def test_max_concurrency_and_max_running_hold_a_keys_jobs_back(rig):
    a, b = rig.key("a"), rig.key("b")
    SqlQuotaStore(rig.engine).update(a, NOW, max_concurrency=3, max_running=1)
    held = rig.queue(a, 4)
    other = rig.queue(b, 1)
    rig.slots.free = 10
    assert rig.dispatcher.dispatch() == 2
    assert set(rig.broker.ids()) == {held[0], other[0]}
    run_to(rig.jobs, held[0], "succeeded", NOW)
    assert rig.dispatcher.dispatch() == 1 and rig.broker.ids()[-1] == held[1]


def test_canceled_jobs_are_never_handed_out(rig):
    ids = rig.queue(rig.key("a"), 2)
    run_to(rig.jobs, ids[0], "canceled_queued", NOW)
    assert rig.dispatcher.dispatch() == 1 and rig.broker.ids() == [ids[1]]


def test_a_failed_publish_puts_the_jobs_back_in_the_backlog(rig):
    ids = rig.queue(rig.key("a"), 2)
    rig.broker.down = True
    with pytest.raises(Unavailable):
        rig.dispatcher.dispatch()
    rig.broker.down = False
    assert rig.dispatcher.dispatch() == 2 and rig.broker.ids() == ids


def test_recovery_hands_out_again_a_job_whose_message_the_broker_lost(rig):
    ids = rig.queue(rig.key("a"), 2)
    rig.dispatcher.dispatch()
    rig.broker.published.clear()  # Redis restarted empty
    assert rig.dispatcher.recover() == 0  # within the grace: the publish may be in flight
    rig.later(6)
    assert rig.dispatcher.recover() == 0  # missing once: it may be moving to the unacked hash
    rig.later(5)
    assert rig.dispatcher.recover() == 2  # missing twice: lost
    assert rig.dispatcher.dispatch() == 2 and sorted(rig.broker.ids()) == sorted(ids)


def test_a_message_seen_in_transit_once_is_not_taken_for_lost(rig):
    ids = rig.queue(rig.key("a"), 1)
    rig.dispatcher.dispatch()
    published = list(rig.broker.published)
    rig.broker.published.clear()  # between the list and the unacked hash on this look
    rig.later(6)
    assert rig.dispatcher.recover() == 0
    rig.broker.published[:] = published
    rig.broker.delivered.add(ids[0])  # there now
    rig.later(5)
    assert rig.dispatcher.recover() == 0


def test_recovery_keeps_messages_waiting_or_just_delivered(rig):
    ids = rig.queue(rig.key("a"), 2)
    rig.dispatcher.dispatch()
    rig.broker.delivered.add(ids[1])  # a worker took it and is about to claim it
    rig.later(60)
    assert rig.dispatcher.recover() == 0


def test_a_lapsed_lease_sends_the_job_round_again_then_ends_it_worker_lost(rig):
    (job_id,) = rig.queue(rig.key("a"), 1)
    rig.dispatcher.dispatch()
    rig.jobs.claim(job_id, rig.clock[0], timedelta(seconds=30))
    rig.later(31)
    assert rig.dispatcher.recover() == 1
    assert rig.dispatcher.dispatch() == 1 and rig.broker.ids() == [job_id, job_id]
    rig.jobs.claim(job_id, rig.clock[0], timedelta(seconds=30))
    rig.later(31)
    rig.dispatcher.recover()  # lost twice: max_attempts
    job = rig.jobs.get(job_id)
    assert (job.status, job.error_code, job.billed) == (JobStatus.FAILED, "worker_lost", False)
    assert rig.dispatcher.dispatch() == 0


def test_each_pass_publishes_the_backlog_left_and_a_full_window_once_a_second(rig):
    a, b = rig.key("a"), rig.key("b")
    rig.queue(a, 5)
    rig.queue(b, 2, priority=Priority.HIGH)
    rig.dispatcher.dispatch()  # room 2: b's two high jobs
    assert rig.board.latest["inference"] == Backlog(
        {Priority.HIGH: {b: 0}, Priority.NORMAL: {a: 5}}, handed_out=2
    )
    rig.queue(a, 1)
    rig.dispatcher.dispatch()  # the window is full and the snapshot is fresh: nothing read
    assert rig.board.latest["inference"].waiting[Priority.NORMAL] == {a: 5}
    rig.ticks[0] += 1.0
    rig.dispatcher.dispatch()
    assert rig.board.latest["inference"].waiting[Priority.NORMAL] == {a: 6}
