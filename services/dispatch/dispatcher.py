"""One dispatch pass: hand queued jobs to the broker in fair order, within a small window.

The broker is a short buffer, not the backlog: each queue gets at most the free slots of the
workers consuming it (from their heartbeats) plus a margin, counting the jobs already handed out
and running, so the order in which jobs run is decided here, where the whole backlog is visible.

Recovery runs here too (every few seconds, not every pass):
- a running job whose lease lapsed (its worker died) counts a lost attempt: back to the backlog,
  or ``failed``/``worker_lost`` at ``LOUPE_MAX_ATTEMPTS`` (``reclaim_lapsed_leases``);
- a handed-out job whose message the broker no longer holds on two looks in a row (Redis
  restarted empty, a publish lost) goes back to the backlog. Publishing twice is harmless: the
  worker's claim is fenced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from services.dispatch.fair import KeyLoad, Waiting, take
from services.dispatch.store import QueueLoad, SqlDispatchStore
from services.errors import Unavailable
from services.jobs.backlog import Backlog, BacklogBoard
from services.jobs.events import JobEvents
from services.jobs.maintenance import QueueRoutes, reclaim_lapsed_leases
from services.jobs.queue import QueuedMessages, TaskQueue
from services.jobs.store import JobRoute, JobSweepStore
from services.types import Priority

log = logging.getLogger("loupe.dispatch")

# A handed-out job's message may be between our commit and our publish, or between the broker's
# list and its unacked hash, for milliseconds; past this it is lost if the broker lacks it.
MESSAGE_GRACE = timedelta(seconds=5)
# A message delivered and never claimed this long belongs to a dead worker (a live one claims
# at once; a retry's countdown is at most 5 minutes).
DELIVERED_GRACE = timedelta(minutes=10)
RECOVERY_LIMIT = 10_000
# How often a queue whose window is full still refreshes its backlog snapshot.
SNAPSHOT_SECONDS = 1.0


class WorkerSlots(Protocol):
    def slots(self, queue: str) -> int:
        """Job slots of the live workers consuming ``queue`` (0 when none is known)."""
        ...


class ModelQueues(QueueRoutes, Protocol):
    def models_on(self, queue: str) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class DispatchPorts:
    """What a dispatcher reads and writes."""

    store: SqlDispatchStore
    jobs: JobSweepStore
    queue: TaskQueue
    broker: QueuedMessages
    workers: WorkerSlots
    routes: ModelQueues
    events: JobEvents
    board: BacklogBoard


class Dispatcher:
    def __init__(
        self,
        ports: DispatchPorts,
        *,
        margin: int,
        max_attempts: int,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ports = ports
        self._margin = margin
        self._max_attempts = max_attempts
        self._clock = clock
        self._monotonic = monotonic
        self._published: dict[str, float] = {}
        self._suspects: set[str] = set()  # missing from the broker at the last recovery

    def dispatch(self) -> int:
        """One pass over every queue; how many jobs it handed out."""
        return sum(self.dispatch_queue(queue) for queue in self._ports.routes.queues())

    def dispatch_queue(self, queue: str) -> int:
        models = self._ports.routes.models_on(queue)
        if not models:
            return 0
        load = self._ports.store.in_flight(models)
        room = self._ports.workers.slots(queue) + self._margin - load.in_flight
        if room <= 0 and not self._snapshot_due(queue):
            return 0
        waiting = self._ports.store.waiting(models)
        chosen = self._choose(models, waiting, load, room) if room > 0 else []
        handed = self._hand_out(queue, chosen)
        self._publish(queue, waiting, load.handed_out, chosen[:handed])
        return handed

    def _choose(
        self, models: Sequence[str], waiting: Mapping[Priority, Mapping[str, int]],
        load: QueueLoad, room: int,
    ) -> list[Waiting]:  # fmt: skip
        """Up to ``room`` jobs in fair order, from each waiting key's ``room`` oldest per class."""
        store = self._ports.store
        candidates = [
            job
            for priority in waiting
            for owner in waiting[priority]
            for job in store.oldest(models, priority, owner, room)
        ]
        limited = self._with_limits(load.keys, {job.owner_id for job in candidates})
        return take(candidates, limited, room)

    def _snapshot_due(self, queue: str) -> bool:
        """Whether the queue's backlog snapshot is older than a second (a full window still
        refreshes it, so queue positions move while the backlog waits)."""
        last = self._published.get(queue)
        return last is None or self._monotonic() - last >= SNAPSHOT_SECONDS

    def _publish(
        self, queue: str, waiting: Mapping[Priority, Mapping[str, int]], handed_out: int,
        chosen: Sequence[Waiting],
    ) -> None:  # fmt: skip
        """The backlog after this pass, for queue positions (``services.jobs.backlog``)."""
        left = {p: dict(keys) for p, keys in waiting.items()}
        for job in chosen:
            left[job.priority][job.owner_id] -= 1
        self._ports.board.publish(queue, Backlog(left, handed_out + len(chosen)))
        self._published[queue] = self._monotonic()

    def _with_limits(self, loads: Mapping[str, KeyLoad], owners: set[str]) -> dict[str, KeyLoad]:
        limits = self._ports.store.limits(owners)
        merged = {owner: loads.get(owner, KeyLoad()) for owner in owners | set(loads)}
        return {owner: replace(load, limit=limits.get(owner)) for owner, load in merged.items()}

    def _hand_out(self, queue: str, chosen: Sequence[Waiting]) -> int:
        """Mark ``chosen`` dispatched, then publish each; unpublished ones go back."""
        if not chosen:
            return 0
        priority = {job.id: job.priority for job in chosen}
        marked = self._ports.store.mark_dispatched([job.id for job in chosen], self._clock())
        for index, job_id in enumerate(marked):
            try:
                self._ports.queue.enqueue_inference(job_id, priority[job_id], queue)
            except Unavailable:
                self._ports.store.undispatch(marked[index:])
                raise
        return len(marked)

    def recover(self) -> int:
        """Hand out again what lost its worker or its message; how many jobs that was."""
        now = self._clock()
        ports = self._ports
        requeued = reclaim_lapsed_leases(
            ports.jobs, ports.events, now, self._max_attempts, RECOVERY_LIMIT
        )
        return len(requeued) + self._lost_messages(now)

    def _lost_messages(self, now: datetime) -> int:
        """Undispatch the handed-out jobs the broker held on neither of two looks in a row
        (one recovery apart): a message moving from its list to the unacked hash is between
        the two for a moment, and a single look may miss it there."""
        buffered = self._ports.store.buffered_before(now - MESSAGE_GRACE, RECOVERY_LIMIT)
        missing = self._missing(buffered, now) if buffered else set()
        lost = missing & self._suspects
        self._suspects = missing - lost
        for job_id in sorted(lost):
            log.warning("job %s: the broker lost its message; back to the backlog", job_id)
        return self._ports.store.undispatch(lost)

    def _missing(self, buffered: Sequence[tuple[JobRoute, datetime]], now: datetime) -> set[str]:
        """Of ``buffered``, the jobs whose message the broker does not hold (a delivered one
        counts while it is younger than :data:`DELIVERED_GRACE`)."""
        held = [self._ports.broker.held(queue) for queue in self._ports.routes.queues()]
        waiting = frozenset().union(*(h.waiting for h in held))
        delivered = frozenset().union(*(h.delivered for h in held))
        stale = now - DELIVERED_GRACE
        return {
            job.id
            for job, at in buffered
            if job.id not in waiting and (job.id not in delivered or at < stale)
        }
