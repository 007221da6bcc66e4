"""Dispatch test helpers: a fake nudge (``services.jobs.handoff``) and broker peeks."""

from __future__ import annotations

import json

import redis

from services.jobs.queue import priority_queue_names


class RecordingNudge:
    """A ``DispatchNudge`` that remembers the queues it was nudged for."""

    def __init__(self) -> None:
        self.queues: list[str] = []

    def nudge(self, queue: str) -> None:
        self.queues.append(queue)


def broker_ids(client: redis.Redis, queue: str = "inference") -> list[str]:
    """The job ids of the messages waiting in ``queue`` (every priority list), in list order."""
    ids = []
    for name in priority_queue_names(queue).values():
        ids += [json.loads(raw)["headers"]["id"] for raw in client.lrange(name, 0, -1)]
    return ids


def drop_message(client: redis.Redis, job_id: str, queue: str = "inference") -> bytes:
    """Lose ``job_id``'s waiting message, as a broker wipe would; returns it."""
    for name in priority_queue_names(queue).values():
        for raw in client.lrange(name, 0, -1):
            if json.loads(raw)["headers"]["id"] == job_id:
                client.lrem(name, 1, raw)
                return bytes(raw)
    raise AssertionError(f"no message for {job_id}")
