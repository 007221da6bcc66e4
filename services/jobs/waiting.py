"""Waiting for a job to finish: the long-poll side of the job-change notifications.

One :class:`JobWaiter` per API process. It owns ONE subscriber thread on ONE Redis connection,
pattern-subscribed to ``loupe:job:*`` (published by :class:`~services.jobs.notify.RedisJobNotifier`
after every committed change), and hands each notification to the requests waiting on that job
through :class:`threading.Event` objects. A waiting request therefore costs one thread blocked on
an Event (gunicorn ``gthread``), not a process and not a Redis connection.

Contract of :meth:`WaitSlot.wait`:

- it reads the store first (terminal: return at once), registers, and then loops: clear its
  Event, note whether the subscription is live, re-read the store (terminal: return), and block
  until a notification, the deadline, or (while the subscription is not live) the poll interval;
- the store is the only truth; a notification is a hint to re-read, so a lost or duplicate message
  costs latency, never a wrong answer;
- Redis down or not yet subscribed: it polls the store every ``poll_interval`` seconds (never an
  error); whenever the subscription (re)starts every waiter re-reads, covering messages missed in
  the gap.

Capacity: at most ``max_waiters`` requests wait at once per process (:meth:`JobWaiter.acquire`
returns None beyond that), so waiting clients can never take every thread from plain requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.jobs.notify import CHANNEL_PATTERN, job_id_from_channel
from services.jobs.types import Job

log = logging.getLogger("loupe.waiting")

DEFAULT_POLL_INTERVAL_S = 0.5
_LISTEN_TIMEOUT_S = 0.5  # how often the subscriber thread checks for close()
_RECONNECT_MAX_S = 5.0
_HEALTH_CHECK_S = 15  # PING an idle subscription so a half-open connection is noticed


class _Subscriber:
    """The one pub/sub listener thread of a process; started on first use, stopped by close()."""

    def __init__(
        self, redis_url: str, dispatch: Callable[[str], None], wake_all: Callable[[], None]
    ):
        self._url = redis_url
        self._dispatch = dispatch
        self._wake_all = wake_all
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._live = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def live(self) -> bool:
        """True while the pattern subscription is confirmed by Redis."""
        return self._live.is_set()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="loupe-job-subscriber", daemon=True
                )
                self._thread.start()

    def wait_live(self, timeout: float) -> bool:
        return self._live.wait(timeout)

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def _run(self) -> None:
        backoff = 0.25
        was_live = True  # log the first failure loudly, repeats quietly
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.25
            except (redis.RedisError, OSError) as exc:
                if self._live.is_set() or was_live:
                    log.warning("job notifications unavailable, waiters poll the store: %s", exc)
                else:
                    log.debug("job notifications still unavailable: %s", exc)
            finally:
                was_live = self._live.is_set()
                self._set_live(False)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, _RECONNECT_MAX_S)

    def _listen(self) -> None:
        client = redis.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=10,
            socket_keepalive=True,
            health_check_interval=_HEALTH_CHECK_S,
            # No silent reconnects inside redis-py: we must know about every gap (see _set_live).
            retry=Retry(NoBackoff(), 0),
        )
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        try:
            pubsub.psubscribe(CHANNEL_PATTERN)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=_LISTEN_TIMEOUT_S)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    self._set_live(True)
                elif message["type"] == "pmessage":
                    job_id = job_id_from_channel(str(message["channel"]))
                    if job_id is not None:
                        self._dispatch(job_id)
        finally:
            pubsub.close()
            client.close()

    def _set_live(self, live: bool) -> None:
        if live == self._live.is_set():
            return
        if live:
            self._live.set()
        else:
            self._live.clear()
        # Going down: waiters switch to polling. Coming up: messages of the gap are lost, so
        # every waiter re-reads the store now that later changes will reach it.
        self._wake_all()


class WaitSlot:
    """The right to wait, held by one request; release it (``with slot:``) when done."""

    def __init__(self, waiter: JobWaiter) -> None:
        self._waiter = waiter
        self._released = False

    def wait(self, job_id: str, load: Callable[[], Job], timeout: float) -> Job:
        """The job once terminal, or as it stands after ``timeout`` seconds (see module doc).

        ``load`` reads the job from the store (and enforces who may see it); its errors propagate.
        """
        return self._waiter._wait(job_id, load, timeout)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._waiter._release()

    def __enter__(self) -> WaitSlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class JobWaiter:
    """Waits for jobs to become terminal, woken by Redis pub/sub; one per API process."""

    def __init__(
        self,
        redis_url: str,
        max_waiters: int,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_waiters = max_waiters
        self._poll_interval = poll_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0
        self._events: dict[str, set[threading.Event]] = {}
        self._subscriber = _Subscriber(redis_url, self._dispatch, self._wake_all)

    @property
    def waiting(self) -> int:
        """Requests holding a slot now."""
        return self._waiting

    @property
    def live(self) -> bool:
        """Whether notifications currently arrive (else waiters poll)."""
        return self._subscriber.live

    def start(self, timeout: float = 0.0) -> bool:
        """Start the subscriber now (it also starts on the first wait); True once it is live."""
        self._subscriber.ensure_started()
        return self._subscriber.wait_live(timeout) if timeout > 0 else self.live

    def acquire(self) -> WaitSlot | None:
        """A slot to wait in, or None when ``max_waiters`` requests already wait (never blocks)."""
        with self._lock:
            if self._waiting >= self._max_waiters:
                return None
            self._waiting += 1
        return WaitSlot(self)

    def close(self) -> None:
        """Stop the subscriber thread; current waiters fall back to polling until they return."""
        self._subscriber.close()
        self._wake_all()

    # -- internals, used through WaitSlot

    def _release(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _wait(self, job_id: str, load: Callable[[], Job], timeout: float) -> Job:
        deadline = self._clock() + timeout
        job = load()
        if job.status.terminal or timeout <= 0:
            return job
        self._subscriber.ensure_started()
        event = threading.Event()
        self._register(job_id, event)
        try:
            while True:
                event.clear()
                # Read `live` BEFORE the store: if the subscription was live then, every change
                # committed after our read will be published to us and set the event.
                live = self._subscriber.live
                job = load()
                remaining = deadline - self._clock()
                if job.status.terminal or remaining <= 0:
                    return job
                event.wait(remaining if live else min(remaining, self._poll_interval))
        finally:
            self._unregister(job_id, event)

    def _register(self, job_id: str, event: threading.Event) -> None:
        with self._lock:
            self._events.setdefault(job_id, set()).add(event)

    def _unregister(self, job_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._events.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[job_id]

    def _dispatch(self, job_id: str) -> None:
        with self._lock:
            events = list(self._events.get(job_id, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [e for group in self._events.values() for e in group]
        for event in events:
            event.set()
