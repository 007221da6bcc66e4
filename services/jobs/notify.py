"""Job-change notifications over Redis pub/sub: the publishing side.

:class:`RedisJobNotifier` is a :class:`~services.jobs.events.JobEvents` sink. After a job's state
change is committed it PUBLISHes ``{"id", "status"}`` on :func:`job_channel` (``loupe:job:<id>``).
Waiting API requests (``services/jobs/waiting.py``) wake on it and re-read the job from the store:
the message is only a hint, the store stays the truth, so a lost message costs latency, never
correctness. Publishing never raises: with Redis down the change is logged and waiters fall back
to polling the store.
"""

from __future__ import annotations

import json
import logging
import threading

import redis

from services.jobs.types import Job

log = logging.getLogger("loupe.notify")

CHANNEL_PREFIX = "loupe:job:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"
# Publishing happens on the worker's and the API's request paths: fail fast when Redis is away.
_SOCKET_TIMEOUT_S = 2.0


def job_channel(job_id: str) -> str:
    """The pub/sub channel that carries changes of ``job_id``."""
    return CHANNEL_PREFIX + job_id


def job_id_from_channel(channel: str) -> str | None:
    """Inverse of :func:`job_channel`; None for a channel that is not a job channel."""
    if not channel.startswith(CHANNEL_PREFIX) or len(channel) == len(CHANNEL_PREFIX):
        return None
    return channel[len(CHANNEL_PREFIX) :]


class RedisJobNotifier:
    """Publishes each committed job change on ``loupe:job:<id>``; thread-safe, lazy."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._url,
                    socket_timeout=_SOCKET_TIMEOUT_S,
                    socket_connect_timeout=_SOCKET_TIMEOUT_S,
                )
            return self._client

    def job_changed(self, job: Job) -> None:
        payload = json.dumps({"id": job.id, "status": job.status.value})
        try:
            self._redis().publish(job_channel(job.id), payload)
        except (redis.RedisError, OSError) as exc:
            # Waiters poll the store while Redis is away; the job itself is already committed.
            log.warning("job %s: change not published (%s): %s", job.id, job.status.value, exc)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
