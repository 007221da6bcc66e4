"""The Loupe Celery app with one fault injected: a job whose metadata says ``"poison": "1"``
kills its worker (SIGKILL of the whole process) once the job is claimed and its run begins, as
an OOM or a segfault in a kernel would. ``celery -A tests.e2e.poison_worker worker ...``.

Every other job runs normally, so a test can check that the poison job ends
``failed``/``worker_lost`` after ``LOUPE_MAX_ATTEMPTS`` while other jobs keep flowing.
"""

from __future__ import annotations

import os
import signal

from services.jobs.types import Job
from workers import pipeline
from workers.celery_app import app
from workers.context import WorkerContext
from workers.engines.base import GenerationResult

__all__ = ["app"]

_run = pipeline._run


def _run_or_die(job: Job, ctx: WorkerContext, stop: pipeline._Stop) -> GenerationResult:
    if job.metadata.get("poison") == "1":
        print(f"poison_worker: job {job.id} kills its worker", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return _run(job, ctx, stop)


pipeline._run = _run_or_die
