"""The dispatch loop's leadership and cadence, with fakes of its nudges and clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from services.clock import utcnow
from services.db import make_engine, upgrade_to_head
from services.dispatch.leases import SqlLeases
from services.dispatch.loop import Cadence, DispatchLoop
from services.errors import Unavailable

CADENCE = Cadence(interval=0.01, recover_every=5.0, lease=6.0)


@dataclass
class Counting:
    """Stands in for a ``Dispatcher``: counts passes and recoveries; may fail."""

    passes: int = 0
    recoveries: int = 0
    failing: bool = False

    def dispatch(self) -> int:
        if self.failing:
            raise Unavailable("database down")
        self.passes += 1
        return 0

    def recover(self) -> int:
        self.recoveries += 1
        return 0


@dataclass
class Ticks:
    now: float = 0.0
    waits: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False


@pytest.fixture
def leases(sqlite_url: str) -> Iterator[SqlLeases]:
    upgrade_to_head(sqlite_url)
    engine = make_engine(sqlite_url)
    yield SqlLeases(engine)
    engine.dispose()


def loop(leases: SqlLeases, work: Counting, ticks: Ticks, holder: str) -> DispatchLoop:
    return DispatchLoop(
        work, leases, ticks, holder=holder, cadence=CADENCE, clock=utcnow,  # type: ignore[arg-type]
        monotonic=ticks,
    )  # fmt: skip


def test_only_the_lease_holder_dispatches_and_a_standby_takes_over_on_release(leases):
    ticks = Ticks()
    first, second = Counting(), Counting()
    leader, standby = loop(leases, first, ticks, "a"), loop(leases, second, ticks, "b")
    assert leader.step() and standby.step()
    assert (first.passes, second.passes) == (1, 0)
    stop = threading.Event()
    stop.set()
    leader.run(stop)  # a clean shutdown gives the lease up
    assert standby.step() and second.passes == 1


def test_recovery_runs_on_its_own_cadence(leases):
    ticks = Ticks()
    work = Counting()
    dispatcher = loop(leases, work, ticks, "a")
    for _ in range(3):
        dispatcher.step()
    ticks.now = 5.0
    dispatcher.step()
    assert (work.passes, work.recoveries) == (4, 2)


def test_a_failed_pass_is_reported_and_the_next_one_tries_again(leases):
    ticks = Ticks()
    work = Counting(failing=True)
    dispatcher = loop(leases, work, ticks, "a")
    assert not dispatcher.step()
    work.failing = False
    assert dispatcher.step() and work.passes == 1
