"""The dispatcher process's loop: lead (or stand by), dispatch when nudged, recover on a timer.

Any number of dispatchers may run; the one holding the ``dispatcher`` lease (SQL) works, the
others retry the lease on every wake-up and take over within a lease of the leader's death
(at once after a clean shutdown, which releases it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from services.dispatch.dispatcher import Dispatcher
from services.dispatch.leases import SqlLeases
from services.errors import Unavailable

log = logging.getLogger("loupe.dispatch")

LEASE_NAME = "dispatcher"
# After a failed pass (the database or the broker away), wait this long before the next.
BACKOFF_SECONDS = 1.0


class Nudges(Protocol):
    def wait(self, timeout: float) -> bool: ...


@dataclass(frozen=True)
class Cadence:
    """How often the loop does what: seconds."""

    interval: float  # a pass at least this often, nudged or not
    recover_every: float  # lapsed leases and lost messages
    lease: float  # the leadership lease; renewed every third of it


class DispatchLoop:
    def __init__(
        self,
        dispatcher: Dispatcher,
        leases: SqlLeases,
        nudges: Nudges,
        *,
        holder: str,
        cadence: Cadence,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dispatcher = dispatcher
        self._leases = leases
        self._nudges = nudges
        self._holder = holder
        self._cadence = cadence
        self._clock = clock
        self._monotonic = monotonic
        self._renewed_at: float | None = None
        self._recovered_at: float | None = None

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; then give the lease up."""
        try:
            while not stop.is_set():
                if not self.step():
                    stop.wait(BACKOFF_SECONDS)
                self._nudges.wait(self._cadence.interval)
        finally:
            self._let_go()

    def step(self) -> bool:
        """One wake-up: a pass if we lead. False if a dependency failed."""
        try:
            if self._leading():
                self._pass()
        except Unavailable as exc:
            log.warning("dispatch pass failed: %s", exc)
            self._renewed_at = None  # re-check leadership first thing next time
            return False
        return True

    def _leading(self) -> bool:
        now = self._monotonic()
        if self._renewed_at is not None and now - self._renewed_at < self._cadence.lease / 3:
            return True
        ttl = timedelta(seconds=self._cadence.lease)
        if self._leases.hold(LEASE_NAME, self._holder, self._clock(), ttl):
            if self._renewed_at is None:
                log.info("dispatcher %s leads", self._holder)
            self._renewed_at = now
            return True
        self._renewed_at = None
        return False

    def _pass(self) -> None:
        now = self._monotonic()
        if self._recovered_at is None or now - self._recovered_at >= self._cadence.recover_every:
            self._recovered_at = now
            self._dispatcher.recover()
        self._dispatcher.dispatch()

    def _let_go(self) -> None:
        if self._renewed_at is None:
            return
        try:
            self._leases.release(LEASE_NAME, self._holder)
        except Unavailable as exc:
            log.warning("could not release the dispatcher lease: %s", exc)
