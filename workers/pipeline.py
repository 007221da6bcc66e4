"""The whole job lifecycle in plain Python: claim, fetch, preprocess, generate, finish.

No Celery in here. Every terminal status is written by one of the store's compare-and-set
transitions, never by a plain update. A run ends only here (succeeded, failed or canceled while
running), fenced by the claim's attempt number, so redelivered messages and duplicate workers are
harmless. A queued job, which no attempt holds, ends on its ``queued`` status instead: the API
cancels it (``services.jobs.service``), the expiry sweep expires it
(``services.jobs.maintenance``), and so does this module when it pulls one past its TTL.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from services.errors import EngineError, InvalidInput, LoupeError, NotFound, Unavailable
from services.jobs.types import Job
from workers.context import WorkerContext
from workers.engines.base import GenerationRequest, GenerationResult
from workers.images import decode_image

log = logging.getLogger("loupe.pipeline")

# Time past the job's own timeout before another worker may take over a running job.
LEASE_GRACE = timedelta(seconds=60)


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    SKIPPED = "skipped"  # not ours: already running elsewhere, finished, or gone


class RetryLater(Exception):
    """A transient infrastructure error; the job was released and the message should retry."""


class NotServedHere(RetryLater):
    """The job's model is not served by this worker: retry the message, never fail the job."""


def process_job(job_id: str, ctx: WorkerContext) -> Outcome:
    """Run one job to a terminal state. Safe to call twice for the same job."""
    try:
        current = ctx.store.get(job_id)
    except NotFound:
        log.warning("job %s does not exist; dropping the message", job_id)
        return Outcome.SKIPPED
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
    job = ctx.store.claim(job_id, now, timedelta(seconds=current.timeout_seconds) + LEASE_GRACE)
    if job is None:
        log.info("job %s: duplicate message ignored (running elsewhere)", job_id)
        return Outcome.SKIPPED
    ctx.events.job_changed(job)  # the claim returned the job as stored: no need to re-read it
    try:
        result, stop = _run(job, ctx)
    except Unavailable as exc:
        ctx.store.release(job.id, job.attempts)
        raise RetryLater(str(exc)) from exc
    except (InvalidInput, EngineError, NotFound) as exc:
        return _fail(job, ctx, exc.code, exc.message)
    except LoupeError as exc:
        return _fail(job, ctx, exc.code, exc.message)
    except Exception:
        # A bug, not the job's fault: fail it visibly rather than leave it running forever.
        log.exception("job %s crashed the pipeline", job.id)
        return _fail(job, ctx, "internal_error", "The worker hit an internal error.")
    outcome = _finish(job, ctx, result, stop)
    if outcome is not Outcome.SKIPPED:
        _announce(job.id, ctx)
    return outcome


def _announce(job_id: str, ctx: WorkerContext) -> None:
    """Tell the event sinks about a state change we just committed (never raises)."""
    try:
        ctx.events.job_changed(ctx.store.get(job_id))
    except LoupeError as exc:
        log.warning("job %s: could not announce its change: %s", job_id, exc.message)


def give_up(job_id: str, ctx: WorkerContext, message: str) -> Outcome:
    """Fail a job whose transient errors outlasted every retry."""
    job = ctx.store.claim(job_id, ctx.clock(), LEASE_GRACE)
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


def _run(job: Job, ctx: WorkerContext) -> tuple[GenerationResult, str | None]:
    spec = ctx.registry.get(job.model)
    images = [decode_image(ctx.blobs.get(ref.key), ctx.image_limits) for ref in job.images]
    engine = ctx.engines.get(spec)
    request = GenerationRequest(
        request_id=job.id, messages=job.messages, images=images, params=job.params
    )
    stop = _Stop(job.id, engine.abort)
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
    return result, stop.reason


def _finish(job: Job, ctx: WorkerContext, result: GenerationResult, stop: str | None) -> Outcome:
    if result.finish_reason == "abort" and stop == "canceled":
        ok = ctx.store.cancel_running(
            job.id,
            job.attempts,
            ctx.clock(),
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
        )
        return Outcome.CANCELED if ok else Outcome.SKIPPED
    if result.finish_reason == "abort":
        ok = ctx.store.fail(
            job.id,
            job.attempts,
            ctx.clock(),
            code="timeout",
            message=f"The job ran past its timeout of {job.timeout_seconds} s and was stopped.",
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
        )
        return Outcome.FAILED if ok else Outcome.SKIPPED
    ok = ctx.store.succeed(
        job.id,
        job.attempts,
        ctx.clock(),
        text=result.text,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )
    if not ok:
        log.warning("job %s was taken over before it finished; result dropped", job.id)
        return Outcome.SKIPPED
    return Outcome.SUCCEEDED


def _fail(job: Job, ctx: WorkerContext, code: str, message: str) -> Outcome:
    log.info("job %s failed: %s: %s", job.id, code, message)
    ok = ctx.store.fail(job.id, job.attempts, ctx.clock(), code=code, message=message)
    if not ok:
        return Outcome.SKIPPED
    _announce(job.id, ctx)
    return Outcome.FAILED
