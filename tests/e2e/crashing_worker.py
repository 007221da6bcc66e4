"""The Loupe Celery app with one fault injected: the process SIGKILLs itself after its first
inference task has returned and before Celery acks the message (``task_postrun`` fires inside
the trace, the late ack only after it). ``celery -A tests.e2e.crashing_worker worker ...``.

This is the crash the ledger must survive: the job is finished and billed in the store, but the
broker still holds its message and delivers it again once the visibility timeout has passed.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery.signals import task_postrun

from services.jobs.queue import INFERENCE_TASK
from workers.celery_app import app

__all__ = ["app"]


@task_postrun.connect
def _die_before_ack(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == INFERENCE_TASK:
        print("crashing_worker: SIGKILL before ack", flush=True)  # the test waits for this line
        os.kill(os.getpid(), signal.SIGKILL)
