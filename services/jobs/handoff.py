"""Handing queued jobs on to the dispatcher (``services.dispatch``).

SQL is the queue of record: a submit commits a ``queued`` job and is done. The dispatcher
decides when the job goes to the broker (fairly, within a small window); the API and the
workers only *nudge* it after a commit that gives it something to do (a new job, a freed slot),
so an idle system dispatches at once instead of at its next periodic pass.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis

log = logging.getLogger("loupe.handoff")

# The pub/sub channel every dispatcher listens on; a message's data is a queue name.
DISPATCH_CHANNEL = "loupe:dispatch"


class DispatchNudge(Protocol):
    def nudge(self, queue: str) -> None:
        """Wake the dispatcher for ``queue``. Best effort: it never raises, since the
        dispatcher's periodic pass finds the work anyway."""
        ...


class RedisDispatchNudge:
    """Publishes nudges on :data:`DISPATCH_CHANNEL` (one ``PUBLISH``, no reply awaited)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisDispatchNudge:
        return cls(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))

    def nudge(self, queue: str) -> None:
        try:
            self._redis.publish(DISPATCH_CHANNEL, queue)
        except redis.RedisError as exc:
            # The job is safe in SQL: the dispatcher's next pass (within a second) takes it.
            log.warning("could not nudge the dispatcher for %s: %s", queue, exc)

    def close(self) -> None:
        self._redis.close()
