"""One dispatch pass: hand queued jobs to the broker in fair order, within a small window.

The broker is a short buffer, not the backlog: each queue gets at most the free slots of the
workers consuming it (from their heartbeats) plus a margin, counting the jobs already handed out
and running, so the order in which jobs run is decided here, where the whole backlog is visible.

Recovery runs here too (every few seconds, not every pass):
- a running job whose lease lapsed (its worker died) counts a lost attempt: back to the backlog,
  or ``failed``/``worker_lost`` at ``LOUPE_MAX_ATTEMPTS`` (``reclaim_lapsed_leases``);
- a handed-out job whose message the broker no longer holds (Redis restarted empty, a publish
  lost) goes back to the backlog. Publishing twice is harmless: the worker's claim is fenced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from services.dispatch.fair import KeyLoad, Waiting, take
from services.dispatch.store import SqlDispatchStore
from services.errors import Unavailable
from services.jobs.events import JobEvents
from services.jobs.maintenance import QueueRoutes, reclaim_lapsed_leases
from services.jobs.queue import QueuedMessages, TaskQueue
from services.jobs.store import JobSweepStore

log = logging.getLogger("loupe.dispatch")

# A handed-out job's message may be between our commit and our publish, or between the broker's
# list and its unacked hash, for milliseconds; past this it is lost if the broker lacks it.
MESSAGE_GRACE = timedelta(seconds=5)
# A message delivered and never claimed this long belongs to a dead worker (a live one claims
# at once; a retry's countdown is at most 5 minutes).
DELIVERED_GRACE = timedelta(minutes=10)
RECOVERY_LIMIT = 10_000


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


class Dispatcher:
    def __init__(
        self, ports: DispatchPorts, *, margin: int, max_attempts: int, clock: Callable[[], datetime]
    ) -> None:
        self._ports = ports
        self._margin = margin
        self._max_attempts = max_attempts
        self._clock = clock

    def dispatch(self) -> int:
        """One pass over every queue; how many jobs it handed out."""
        return sum(self.dispatch_queue(queue) for queue in self._ports.routes.queues())

    def dispatch_queue(self, queue: str) -> int:
        models = self._ports.routes.models_on(queue)
        if not models:
            return 0
        in_flight, loads = self._ports.store.in_flight(models)
        room = self._ports.workers.slots(queue) + self._margin - in_flight
        if room <= 0:
            return 0
        waiting = self._candidates(models, room)
        limited = self._with_limits(loads, {job.owner_id for job in waiting})
        return self._hand_out(queue, take(waiting, limited, room))

    def _candidates(self, models: Sequence[str], room: int) -> list[Waiting]:
        """Each waiting key's ``room`` oldest jobs per priority class: all a pass can take."""
        store = self._ports.store
        return [
            job
            for priority, owner in store.waiting_owners(models)
            for job in store.oldest(models, priority, owner, room)
        ]

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
        buffered = self._ports.store.buffered_before(now - MESSAGE_GRACE, RECOVERY_LIMIT)
        if not buffered:
            return 0
        held = [self._ports.broker.held(queue) for queue in self._ports.routes.queues()]
        waiting = frozenset().union(*(h.waiting for h in held))
        delivered = frozenset().union(*(h.delivered for h in held))
        stale = now - DELIVERED_GRACE
        lost = [
            job.id
            for job, at in buffered
            if job.id not in waiting and (job.id not in delivered or at < stale)
        ]
        for job_id in lost:
            log.warning("job %s: the broker lost its message; back to the backlog", job_id)
        return self._ports.store.undispatch(lost)
