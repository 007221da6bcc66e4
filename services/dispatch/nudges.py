"""The dispatcher's side of the nudges (``services.jobs.handoff``): wait for one, or time out."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis

from services.jobs.handoff import DISPATCH_CHANNEL

log = logging.getLogger("loupe.dispatch")


class NudgeListener:
    """Subscribed to :data:`DISPATCH_CHANNEL`. Redis being away only makes it a timer."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=None)
        self._pubsub: Any = None

    def wait(self, timeout: float) -> bool:
        """Block until nudged (True) or ``timeout`` seconds pass (False); a burst of nudges
        counts once, so one pass serves every submit that arrived meanwhile."""
        try:
            pubsub = self._subscribed()
            nudged = pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            while nudged and pubsub.get_message(ignore_subscribe_messages=True, timeout=0):
                pass
        except redis.RedisError as exc:
            log.warning("nudges unavailable (%s); dispatching on the timer", exc)
            self._reset()
            time.sleep(timeout)
            return False
        return bool(nudged)

    def _subscribed(self) -> Any:
        if self._pubsub is None:
            pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
            pubsub.subscribe(DISPATCH_CHANNEL)
            self._pubsub = pubsub
        return self._pubsub

    def _reset(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()
        self._pubsub = None

    def close(self) -> None:
        self._reset()
        self._redis.close()
