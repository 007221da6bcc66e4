"""Readiness: does this process reach the systems it cannot work without, right now?

Each :class:`Check` names one system (``SQL``, ``Redis``, ``S3``) and probes it. The probes run
at once, each on its own thread, and :meth:`Readiness.failing` waits at most ``timeout`` for
all of them: a system that hangs costs one probe thread, never a slow answer, and a probe still
stuck from an earlier call delays only its own system's next probe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis
from sqlalchemy import Engine, text

from services.db.session import reading
from services.errors import LoupeError, Unavailable

log = logging.getLogger("loupe.readiness")


@dataclass(frozen=True)
class Check:
    """``probe`` returns when ``name`` answers and raises :class:`LoupeError` when it fails."""

    name: str
    probe: Callable[[], object]


class Readiness:
    """Probes ``checks`` together within ``timeout`` seconds."""

    def __init__(self, checks: Sequence[Check], timeout: float) -> None:
        self._checks = tuple(checks)
        self._timeout = timeout
        self._threads = {
            check.name: ThreadPoolExecutor(1, thread_name_prefix=f"loupe-ready-{check.name}")
            for check in self._checks
        }

    def failing(self) -> str | None:
        """The name of the first check, in the order given, that failed or did not answer in
        time; None when every one answered."""
        started = [(c, self._threads[c.name].submit(c.probe)) for c in self._checks]
        deadline = time.monotonic() + self._timeout
        for check, answer in started:
            if not _answered(check.name, answer, deadline - time.monotonic()):
                return check.name
        return None

    def close(self) -> None:
        """Stop the probe threads (one still waiting on a hung system is left to its timeout)."""
        for threads in self._threads.values():
            threads.shutdown(wait=False, cancel_futures=True)


def _answered(name: str, answer: Future[object], seconds: float) -> bool:
    try:
        answer.result(timeout=max(seconds, 0.0))
    except TimeoutError:
        log.warning("not ready: %s did not answer in time", name)
        return False
    except LoupeError as exc:
        log.warning("not ready: %s: %s", name, exc.message)
        return False
    return True


def sql_probe(engine: Engine) -> Callable[[], None]:
    """``SELECT 1`` on a pooled connection."""

    def probe() -> None:
        with reading(engine) as conn:
            conn.execute(text("SELECT 1"))

    return probe


class RedisProbe:
    """``PING`` over a client of its own whose every socket operation gives up after
    ``timeout`` seconds (the application's clients wait longer)."""

    def __init__(self, url: str, timeout: float) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def __call__(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise Unavailable(f"redis unavailable: {exc}") from exc

    def close(self) -> None:
        self._client.close()
