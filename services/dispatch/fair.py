"""Fair order: which waiting jobs the dispatcher hands out next, and in what order.

Priority class first (a higher class always goes before a lower one). Within a class, the key
with the fewest jobs in flight (handed to the broker or running) goes next, so keys share the
workers equally whatever their backlogs (water-filling: the least-served key is topped up
first); ties go to the older job. A key at its in-flight limit gets nothing more.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.types import Priority


@dataclass(frozen=True)
class Waiting:
    """A queued job not yet handed to the broker."""

    id: str
    owner_id: str
    priority: Priority
    created_at: datetime


@dataclass(frozen=True)
class KeyLoad:
    """A key's jobs in flight now: on this queue (for its share) and anywhere (for its limit)."""

    on_queue: int = 0
    anywhere: int = 0
    limit: int | None = None  # Quota.in_flight_limit

    def room(self) -> int | None:
        """How many more of the key's jobs may go out (None: no limit)."""
        return None if self.limit is None else max(0, self.limit - self.anywhere)


def fair_order(
    heads: Mapping[str, Sequence[Waiting]], loads: Mapping[str, KeyLoad], room: int
) -> list[Waiting]:
    """Up to ``room`` jobs of one priority class, from each key's oldest-first ``heads``."""
    taken: list[Waiting] = []
    left = {owner: _allowed(jobs, loads.get(owner, KeyLoad())) for owner, jobs in heads.items()}
    entries = (_entry(owner, left[owner], loads.get(owner, KeyLoad()).on_queue) for owner in left)
    heap = [entry for entry in entries if entry is not None]
    heapq.heapify(heap)
    while heap and len(taken) < room:
        served, _, owner = heapq.heappop(heap)
        taken.append(left[owner].pop(0))
        entry = _entry(owner, left[owner], served + 1)
        if entry is not None:
            heapq.heappush(heap, entry)
    return taken


def _allowed(jobs: Sequence[Waiting], load: KeyLoad) -> list[Waiting]:
    """The key's jobs it may still send out under its in-flight limit."""
    room = load.room()
    return list(jobs if room is None else jobs[:room])


def _entry(owner: str, jobs: list[Waiting], served: int) -> tuple[int, datetime, str] | None:
    """Heap order: fewest in flight first, then the oldest head job."""
    return (served, jobs[0].created_at, owner) if jobs else None


def by_priority(jobs: Sequence[Waiting]) -> dict[Priority, dict[str, list[Waiting]]]:
    """``jobs`` grouped by priority class, then by key, each key's oldest first."""
    grouped: dict[Priority, dict[str, list[Waiting]]] = {}
    for job in sorted(jobs, key=lambda j: (j.created_at, j.id)):
        grouped.setdefault(job.priority, {}).setdefault(job.owner_id, []).append(job)
    return grouped


def take(waiting: Sequence[Waiting], loads: Mapping[str, KeyLoad], room: int) -> list[Waiting]:
    """Up to ``room`` of ``waiting``: higher priority classes first, each class in fair order.
    What one class takes counts against the keys' limits in the next."""
    taken: list[Waiting] = []
    current = dict(loads)
    grouped = by_priority(waiting)
    for priority in sorted(grouped, key=lambda p: p.broker_priority):
        chosen = fair_order(grouped[priority], current, room - len(taken))
        taken += chosen
        current = _after(current, chosen)
    return taken


def _after(loads: Mapping[str, KeyLoad], chosen: Sequence[Waiting]) -> dict[str, KeyLoad]:
    """``loads`` once ``chosen`` are in flight too."""
    updated = dict(loads)
    for job in chosen:
        load = updated.get(job.owner_id, KeyLoad())
        updated[job.owner_id] = KeyLoad(load.on_queue + 1, load.anywhere + 1, load.limit)
    return updated
