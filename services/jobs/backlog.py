"""The backlog as the dispatcher last saw it, for queue positions that cost the same at any depth.

Each dispatch pass already groups a queue's waiting jobs by priority class and key; it publishes
those counts (and how many jobs it has handed to the broker) here. A queued job's position is
then estimated in the dispatcher's own order from this snapshot plus one bounded count of its
own key's older jobs, instead of a COUNT over the whole backlog on every poll.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import redis

from services.types import Priority

log = logging.getLogger("loupe.backlog")

KEY_PREFIX = "loupe:backlog:"
# A snapshot older than this is gone (its dispatcher died): positions fall back to SQL counts.
TTL_SECONDS = 30


@dataclass(frozen=True)
class Backlog:
    """A queue's waiting jobs per priority class and key, and those handed to the broker."""

    waiting: Mapping[Priority, Mapping[str, int]] = field(default_factory=dict)
    handed_out: int = 0

    def position(self, priority: Priority, owner_id: str, own_ahead: int) -> int:
        """Jobs the dispatcher hands out before one of ``owner_id``'s, ``own_ahead`` of whose
        own jobs of its class are older: what is in the broker, every higher class, and each
        other key's share of this class (one each per turn: at most ``own_ahead + 1``)."""
        higher = sum(
            sum(keys.values())
            for p, keys in self.waiting.items()
            if p.broker_priority < priority.broker_priority
        )
        turns = own_ahead + 1
        others = sum(
            min(n, turns) for key, n in self.waiting.get(priority, {}).items() if key != owner_id
        )
        return self.handed_out + higher + own_ahead + others

    def to_json(self) -> str:
        waiting = {p.value: dict(keys) for p, keys in self.waiting.items()}
        return json.dumps({"waiting": waiting, "handed_out": self.handed_out})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Backlog:
        data = json.loads(raw)
        waiting = {Priority(p): dict(keys) for p, keys in data["waiting"].items()}
        return cls(waiting, int(data["handed_out"]))


class BacklogBoard(Protocol):
    def publish(self, queue: str, backlog: Backlog) -> None: ...
    def read(self, queue: str) -> Backlog | None: ...


class RedisBacklogBoard:
    """One Redis string per queue, expiring after :data:`TTL_SECONDS`. Best effort both ways:
    a lost snapshot only makes positions fall back to SQL."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisBacklogBoard:
        return cls(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))

    def publish(self, queue: str, backlog: Backlog) -> None:
        try:
            self._redis.set(KEY_PREFIX + queue, backlog.to_json(), ex=TTL_SECONDS)
        except redis.RedisError as exc:
            log.warning("could not publish the backlog of %s: %s", queue, exc)

    def read(self, queue: str) -> Backlog | None:
        try:
            raw = self._redis.get(KEY_PREFIX + queue)
        except redis.RedisError:
            return None
        return None if raw is None else Backlog.from_json(raw)

    def close(self) -> None:
        self._redis.close()
