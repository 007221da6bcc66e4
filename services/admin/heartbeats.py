"""Worker heartbeats in Redis: one hash per worker process, kept alive by a TTL.

A worker writes ``loupe:workers:<host>:<pid>`` every few seconds with a TTL a few heartbeats long,
and deletes it when it shuts down cleanly. A worker that dies (``kill -9``, lost host) simply stops
refreshing it and Redis expires it, so the reading side never needs a ``celery inspect`` round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from services.admin.types import WorkerInfo
from services.errors import Unavailable

KEY_PREFIX = "loupe:workers:"
_SCAN_COUNT = 500


def heartbeat_key(host: str, pid: int) -> str:
    return f"{KEY_PREFIX}{host}:{pid}"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def encode_worker(info: WorkerInfo) -> dict[str, str]:
    """The hash fields of one heartbeat (all strings; queues comma-separated)."""
    return {
        "host": info.host,
        "pid": str(info.pid),
        "queues": ",".join(info.queues),
        "engine": info.engine,
        "model": info.model,
        "slots": str(info.slots),
        "slots_in_use": str(info.slots_in_use),
        "started_at": _ts(info.started_at),
        "last_seen": _ts(info.last_seen),
    }


def decode_worker(fields: Mapping[bytes, bytes]) -> WorkerInfo | None:
    """A :class:`WorkerInfo` from a hash, or None if the hash is empty or malformed."""
    data = {k.decode(): v.decode() for k, v in fields.items()}
    try:
        return WorkerInfo(
            host=data["host"],
            pid=int(data["pid"]),
            queues=tuple(q for q in data.get("queues", "").split(",") if q),
            engine=data.get("engine", ""),
            model=data.get("model", ""),
            slots=int(data["slots"]),
            slots_in_use=int(data.get("slots_in_use", "0")),
            started_at=datetime.fromisoformat(data["started_at"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
        )
    except (KeyError, ValueError):
        return None


class RedisHeartbeats:
    """Writes and lists heartbeats in the broker's Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisHeartbeats:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))

    def beat(self, info: WorkerInfo, ttl_seconds: int) -> None:
        """Write (or refresh) ``info`` and its TTL in one round trip."""
        key = heartbeat_key(info.host, info.pid)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(key, mapping=dict[Any, Any](encode_worker(info)))
            pipe.expire(key, ttl_seconds)
            pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"redis unavailable: {exc}") from exc

    def remove(self, host: str, pid: int) -> None:
        try:
            self._redis.delete(heartbeat_key(host, pid))
        except redis.RedisError as exc:
            raise Unavailable(f"redis unavailable: {exc}") from exc

    def live(self) -> list[WorkerInfo]:
        """Workers whose heartbeat key has not expired, sorted by id.

        Redis's TTL is the only judge of liveness: comparing ``last_seen`` with our own clock
        would hide live workers on a host whose clock is behind.
        """
        try:
            keys = list(self._redis.scan_iter(match=KEY_PREFIX + "*", count=_SCAN_COUNT))
            if not keys:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            hashes = pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"redis unavailable: {exc}") from exc
        workers = [w for w in map(decode_worker, hashes) if w is not None]
        return sorted(workers, key=lambda w: w.id)

    def close(self) -> None:
        self._redis.close()
