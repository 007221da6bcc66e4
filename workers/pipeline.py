"""The whole job lifecycle in plain Python: claim, fetch, preprocess, generate, finish.

No Celery in here. Every terminal status is written by one of the store's compare-and-set
transitions, never by a plain update. A run ends only here (succeeded, failed or canceled while
running), fenced by the claim's attempt number, so redelivered messages and duplicate workers are
harmless. A queued job, which no attempt holds, ends on its ``queued`` status instead: the API
cancels it (``services.jobs.service``), the expiry sweep expires it
(``services.jobs.maintenance``), and so does this module when it pulls one past its TTL.

A run holds a short lease, renewed by :class:`~workers.lease_keeper.LeaseKeeper` while it runs.
A lapsed lease (a dead worker) is counted as a lost attempt by ``reclaim_lapsed`` (the lost-job
sweep, or this module when the dead worker's message comes back), which queues the job again or,
at ``LOUPE_MAX_ATTEMPTS``, ends it ``failed``/``worker_lost``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from functools import partial

from services.errors import LoupeError, NotFound, Unavailable
from services.jobs.types import Job
from services.types import JobStatus
from workers.context import WorkerContext
from workers.engines.base import GenerationRequest, GenerationResult
from workers.images import decode_image

log = logging.getLogger("loupe.pipeline")

# The longest pause between two tries of a finishing write while the database is away.
MAX_RETRY_DELAY_SECONDS = 5.0


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    SKIPPED = "skipped"  # not ours: already running elsewhere, finished, or gone


class RetryLater(Exception):
    """A transient infrastructure error; the job is safe (queued, or its lease will lapse and
    hand it out again) and the message should be retried, never dropped."""


class NotServedHere(RetryLater):
    """The job's model is not served by this worker: retry the message, never fail the job."""


def process_job(job_id: str, ctx: WorkerContext) -> Outcome:
    """Run one job to a terminal state. Safe to call twice for the same job.

    A dependency that is down (``Unavailable``) never loses the job or its message: before the
    claim and while running it raises :class:`RetryLater` (the job stays, or is put back,
    queued); a finished result is written with retries (:func:`_persist`)."""
    try:
        job = _take(job_id, ctx)
    except Unavailable as exc:
        raise RetryLater(str(exc)) from exc
    if isinstance(job, Outcome):
        return job
    ctx.events.job_changed(job)  # the claim returned the job as stored: no need to re-read it
    stop = _Stop(job.id, lambda job_id: ctx.engines.get(ctx.registry.get(job.model)).abort(job_id))
    with ctx.leases.hold(job.id, job.attempts, lambda: stop("lost")):
        return _run_and_finish(job, ctx, stop)


def _take(job_id: str, ctx: WorkerContext) -> Job | Outcome:
    """The job, claimed by this worker; or the outcome that means it is not ours to run."""
    try:
        current = ctx.store.get(job_id)
    except NotFound:
        log.warning("job %s does not exist; dropping the message", job_id)
        return Outcome.SKIPPED
    if current.status is JobStatus.RUNNING:
        current = _reclaim(current, ctx)  # a dead worker's job, redelivered to us?
    if current.status.terminal:
        log.info("job %s: duplicate message ignored (already %s)", job_id, current.status.value)
        return Outcome.SKIPPED
    if current.model not in ctx.registry:
        # Sent to a queue this worker consumes, for a model it does not serve (LOUPE_MODEL_QUEUES
        # and the workers' -Q / LOUPE_SERVED_MODELS disagree, or a shared queue). Leave the job
        # queued and retry the message: a worker that serves the model may take it.
        raise NotServedHere(f"model {current.model!r} is not served by this worker")
    now = ctx.clock()
    overdue = current.expires_at is not None and current.expires_at <= now
    if overdue and ctx.store.expire_queued(job_id, now):
        log.info("job %s expired in the queue; not run", job_id)
        _announce(job_id, ctx)
        return Outcome.EXPIRED
    job = ctx.store.claim(job_id, now, ctx.leases.lease)
    if job is None:
        log.info("job %s: duplicate message ignored (running elsewhere)", job_id)
        return Outcome.SKIPPED
    return job


def _reclaim(current: Job, ctx: WorkerContext) -> Job:
    """``current`` (running) after counting its lapsed lease, if it has one, as a lost attempt."""
    status = ctx.store.reclaim_lapsed(current.id, ctx.clock(), ctx.max_attempts)
    if status is None:
        return current
    log.warning("job %s: its worker's lease lapsed; now %s", current.id, status.value)
    if status.terminal:
        _announce(current.id, ctx)
    return ctx.store.get(current.id)


def _run_and_finish(job: Job, ctx: WorkerContext, stop: _Stop) -> Outcome:
    try:
        result = _run(job, ctx, stop)
    except Unavailable as exc:
        _persist(job, ctx, lambda: ctx.store.release(job.id, job.attempts, ctx.clock()))
        raise RetryLater(str(exc)) from exc
    except LoupeError as exc:  # InvalidInput, EngineError, NotFound...: the job's own failure
        return _fail(job, ctx, exc.code, exc.message)
    except Exception:
        # A bug, not the job's fault: fail it visibly rather than leave it running forever.
        log.exception("job %s crashed the pipeline", job.id)
        return _fail(job, ctx, "internal_error", "The worker hit an internal error.")
    outcome = _finish(job, ctx, result, stop.reason)
    if outcome is not Outcome.SKIPPED:
        _announce(job.id, ctx)
    return outcome


def _persist(job: Job, ctx: WorkerContext, write: Callable[[], bool]) -> bool:
    """``write()`` (a fenced write of our attempt), retried with backoff while the database is
    unavailable, for up to two leases: a write after our lease lapsed still lands unless the job
    was handed out again meanwhile (the fence decides). Past that budget ``RetryLater``: the
    job's lease has lapsed, so the sweep or the retried message runs it again."""
    deadline = time.monotonic() + 2 * ctx.leases.lease.total_seconds()
    delay = 0.25
    while True:
        try:
            return write()
        except Unavailable as exc:
            if time.monotonic() + delay > deadline:
                raise RetryLater(f"job {job.id}: could not write its end: {exc}") from exc
            log.warning("job %s: write failed (%s); retrying in %.2f s", job.id, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)


def _announce(job_id: str, ctx: WorkerContext) -> None:
    """Tell the event sinks about a state change we just committed (never raises)."""
    try:
        ctx.events.job_changed(ctx.store.get(job_id))
    except LoupeError as exc:
        log.warning("job %s: could not announce its change: %s", job_id, exc.message)


def give_up(job_id: str, ctx: WorkerContext, message: str) -> Outcome:
    """Fail a job whose transient errors outlasted every retry."""
    job = ctx.store.claim(job_id, ctx.clock(), ctx.leases.lease)
    if job is None:
        return Outcome.SKIPPED
    return _fail(job, ctx, "unavailable", message)


class _Stop:
    """Why the pipeline aborted a running engine request, if it did (first reason wins)."""

    def __init__(self, job_id: str, abort: Callable[[str], None]) -> None:
        self._job_id = job_id
        self._abort = abort
        self._lock = threading.Lock()
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        self._abort(self._job_id)

    def close(self) -> None:
        """The engine request has ended: later reasons (a lease lost while the result is being
        written, say) no longer apply to it."""
        with self._lock:
            if self.reason is None:
                self.reason = ""


def _run(job: Job, ctx: WorkerContext, stop: _Stop) -> GenerationResult:
    """The engine's result for ``job``; ``stop`` aborts it (timeout, cancel, lease lost)."""
    images = [decode_image(ctx.blobs.get(ref.key), ctx.image_limits) for ref in job.images]
    engine = ctx.engines.get(ctx.registry.get(job.model))
    request = GenerationRequest(
        request_id=job.id, messages=job.messages, images=images, params=job.params
    )
    timer = threading.Timer(job.timeout_seconds, stop, args=("timeout",))
    timer.daemon = True
    timer.start()
    try:
        with ctx.cancels.watch(job.id, lambda: stop("canceled")):
            if job.cancel_requested_at is not None:
                stop("canceled")
            result = engine.generate(request)
    finally:
        timer.cancel()
        stop.close()
    return result


def _finish(job: Job, ctx: WorkerContext, result: GenerationResult, stop: str | None) -> Outcome:
    """Write the run's end, fenced by our attempt; SKIPPED when the job is no longer ours."""
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}
    if result.finish_reason == "abort" and stop == "lost":
        log.warning("job %s: stopped, its lease was taken over; nothing written", job.id)
        return Outcome.SKIPPED
    if result.finish_reason == "abort" and stop == "canceled":
        write = partial(ctx.store.cancel_running, job.id, job.attempts, ctx.clock(), **usage)
        return Outcome.CANCELED if _persist(job, ctx, write) else Outcome.SKIPPED
    if result.finish_reason == "abort":
        message = f"The job ran past its timeout of {job.timeout_seconds} s and was stopped."
        write = partial(
            ctx.store.fail, job.id, job.attempts, ctx.clock(), code="timeout", message=message
        )
        return Outcome.FAILED if _persist(job, ctx, partial(write, **usage)) else Outcome.SKIPPED
    write = partial(
        ctx.store.succeed,
        job.id,
        job.attempts,
        ctx.clock(),
        text=result.text,
        finish_reason=result.finish_reason,
        **usage,
    )
    if not _persist(job, ctx, write):
        log.warning("job %s was taken over before it finished; result dropped", job.id)
        return Outcome.SKIPPED
    return Outcome.SUCCEEDED


def _fail(job: Job, ctx: WorkerContext, code: str, message: str) -> Outcome:
    log.info("job %s failed: %s: %s", job.id, code, message)
    write = partial(ctx.store.fail, job.id, job.attempts, ctx.clock(), code=code, message=message)
    if not _persist(job, ctx, write):
        return Outcome.SKIPPED
    _announce(job.id, ctx)
    return Outcome.FAILED
