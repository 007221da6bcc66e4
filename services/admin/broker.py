"""Queue depth as the Celery Redis transport keeps it.

kombu keeps one Redis list per queue and priority step (``inference``, ``inference:5``,
``inference:9``; see ``services.jobs.queue.priority_queue_names``): depth is their ``LLEN``.
A message delivered to a worker moves to the ``unacked`` hash (delivery tag →
``[message, exchange, routing_key]``) until the worker acknowledges it; with ``acks_late`` that is
until the job finished, so the hash counts running jobs per queue (Celery routes a queue's
tasks with its name as routing key).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import redis

from services.errors import Unavailable
from services.jobs.queue import UNACKED_KEY, priority_queue_names, unacked_record
from services.types import Priority


class RedisBrokerStats:
    """Reads list lengths and the unacked hash; one pipelined round trip per call."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisBrokerStats:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))

    def depths(
        self, queues: Sequence[str]
    ) -> tuple[dict[str, dict[Priority, tuple[str, int]]], dict[str, int]]:
        """({queue: {priority: (list name, length)}}, {queue: unacked count})."""
        names = {q: priority_queue_names(q) for q in queues}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for per_priority in names.values():
                for list_name in per_priority.values():
                    pipe.llen(list_name)
            # The hash holds at most (workers x slots) entries: small, unlike the lists.
            pipe.hvals(UNACKED_KEY)
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"redis unavailable: {exc}") from exc
        lengths = iter(replies[:-1])
        depths = {
            q: {p: (list_name, int(next(lengths))) for p, list_name in per_priority.items()}
            for q, per_priority in names.items()
        }
        unacked = _unacked_by_queue(replies[-1])
        return depths, {q: unacked.get(q, 0) for q in queues}


def _unacked_by_queue(values: Sequence[bytes]) -> Counter[str]:
    # A value that is not a kombu record is ignored rather than failing the whole view.
    records = (unacked_record(raw) for raw in values)
    return Counter(record[1] for record in records if record is not None)
