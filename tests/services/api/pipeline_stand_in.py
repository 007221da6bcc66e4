"""A stand-in for workers/pipeline.py in API tests that run without a Celery worker."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from services.clock import utcnow
from services.db.schema import jobs
from tests.support.roots import ApiUnderTest


class PipelineStandIn:
    """Finishes every queued job after ``delay`` seconds, as workers/pipeline.py would.

    ``outcome``: ``error_code=...`` fails the job with that code; ``cancel=True`` cancels it
    while queued (as the API does); otherwise it succeeds (``finish_reason`` default "stop").
    """

    def __init__(self, api: ApiUnderTest, delay: float = 0.3, **outcome: Any) -> None:
        self._api = api
        self._delay = delay
        self._outcome = outcome
        self._stop = threading.Event()
        self.finished: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> PipelineStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _queued_ids(self) -> list[str]:
        with self._api.db_engine.connect() as conn:
            return list(conn.execute(select(jobs.c.id).where(jobs.c.status == "queued")).scalars())

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for job_id in self._queued_ids():
                time.sleep(self._delay)
                self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        store = self._api.jobs
        if self._outcome.get("cancel"):
            assert store.cancel_queued(job_id, utcnow())
            self._api.events.job_changed(store.get(job_id))
            self.finished[job_id] = time.monotonic()
            return
        job = store.claim(job_id, utcnow(), timedelta(seconds=60))
        assert job is not None
        self._api.events.job_changed(job)
        if "error_code" in self._outcome:
            store.fail(
                job_id,
                job.attempts,
                utcnow(),
                code=self._outcome["error_code"],
                message="it broke",
                prompt_tokens=5,
                completion_tokens=0,
            )
        else:
            store.succeed(
                job_id,
                job.attempts,
                utcnow(),
                text="a yellow circle",
                finish_reason=self._outcome.get("finish_reason", "stop"),
                prompt_tokens=11,
                completion_tokens=4,
            )
        self._api.events.job_changed(store.get(job_id))
        self.finished[job_id] = time.monotonic()
