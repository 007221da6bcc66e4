"""process_job with a fake Engine and BlobStore (our Protocols) over a real SQLite store."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.catalog.registry import build_registry
from services.catalog.spec import ModelSpec
from services.db import make_engine
from services.errors import EngineError, Unavailable
from services.jobs.events import NoJobEvents
from services.settings import Settings
from services.storage.images import ImageLimits
from services.types import JobStatus, SamplingParams
from tests.support.dispatch import RecordingNudge
from tests.support.images import image_ref, make_image
from tests.support.jobs import insert_job
from tests.support.keys import new_key
from tests.support.stores import sql_job_store
from workers.cancel_watcher import CancelWatcher
from workers.context import WorkerContext
from workers.engines.base import GenerationRequest, GenerationResult
from workers.lease_keeper import LeaseKeeper
from workers.pipeline import NotServedHere, Outcome, RetryLater, give_up, process_job

NOW = datetime(2026, 11, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


class FakeEngine:
    def __init__(self, *, error: Exception | None = None, block: threading.Event | None = None):
        self.calls: list[GenerationRequest] = []
        self.aborted: list[str] = []
        self._error = error
        self._block = block
        self._abort = threading.Event()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls.append(request)
        if self._error is not None:
            raise self._error
        if self._block is not None:
            self._abort.wait(5)
            return GenerationResult("par", "abort", 11, 2)
        return GenerationResult("a cat", "stop", 11, 3)

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self._abort.set()

    def close(self) -> None:
        pass


class FakeEngines:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, spec: ModelSpec) -> FakeEngine:
        return self.engine

    def close(self) -> None:
        pass


class DictBlobs:
    def __init__(self, *, fail_reads: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail_reads = fail_reads

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        if self.fail_reads:
            raise Unavailable("object store down")
        return self.objects[key]

    def exists(self, key: str) -> bool:
        return key in self.objects

    def modified_at(self, key: str) -> Any:
        return NOW if key in self.objects else None

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


@pytest.fixture
def store(sqlite_url):
    engine = make_engine(sqlite_url)
    yield sql_job_store(engine)
    engine.dispose()


def _ctx(store, engine: FakeEngine, blobs: Any = None, events: Any = None) -> WorkerContext:
    return WorkerContext(
        store=store,
        blobs=blobs or DictBlobs(),
        registry=build_registry(Settings()),
        engines=FakeEngines(engine),
        cancels=CancelWatcher(store, 0.01),
        leases=LeaseKeeper(store, LEASE, 0.05, clock=lambda: NOW),
        events=events or NoJobEvents(),
        image_limits=ImageLimits.from_settings(Settings()),
        nudge=RecordingNudge(),
        clock=lambda: NOW,
    )


def _queue_job(store, ctx: WorkerContext, timeout: int = 30, **changes: Any) -> str:
    owner = new_key(store._engine, "o", at=NOW).id
    data = make_image()
    ref = image_ref("cd", len(data), 64, 48)
    ctx.blobs.put(ref.key, data, ref.content_type)
    params = SamplingParams(max_tokens=4)
    build = {"images": (ref,), "params": params, "timeout_seconds": timeout, **changes}
    return insert_job(store, owner, NOW, job_id="job_p", **build).id


def test_pipeline_runs_job_and_records_usage(store):
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    assert process_job(job_id, ctx) is Outcome.SUCCEEDED
    job = store.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert (job.output_text, job.finish_reason) == ("a cat", "stop")
    assert (job.prompt_tokens, job.completion_tokens) == (11, 3)
    request = engine.calls[0]
    assert request.request_id == job_id
    assert request.images[0].size == (64, 48)
    assert request.images[0].mode == "RGB"


def test_pipeline_duplicate_delivery_runs_model_once(store):
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    assert process_job(job_id, ctx) is Outcome.SUCCEEDED
    assert process_job(job_id, ctx) is Outcome.SKIPPED
    assert len(engine.calls) == 1
    assert store.get(job_id).attempts == 1


def test_pipeline_concurrent_duplicates_run_model_once(store):
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(process_job(job_id, ctx))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == sorted([Outcome.SUCCEEDED] + [Outcome.SKIPPED] * 3)
    assert len(engine.calls) == 1


def test_pipeline_model_error_fails_job_clearly(store):
    engine = FakeEngine(error=EngineError("prompt too long", code="context_length_exceeded"))
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    assert process_job(job_id, ctx) is Outcome.FAILED
    job = store.get(job_id)
    assert job.status is JobStatus.FAILED
    assert (job.error_code, job.error_message) == ("context_length_exceeded", "prompt too long")


def test_pipeline_unexpected_error_fails_job_not_stuck(store):
    ctx = _ctx(store, FakeEngine(error=RuntimeError("bug")))
    job_id = _queue_job(store, ctx)
    assert process_job(job_id, ctx) is Outcome.FAILED
    assert store.get(job_id).error_code == "internal_error"


def test_pipeline_transient_error_releases_job_for_retry(store):
    engine = FakeEngine()
    blobs = DictBlobs()
    ctx = _ctx(store, engine, blobs)
    job_id = _queue_job(store, ctx)
    blobs.fail_reads = True
    with pytest.raises(RetryLater):
        process_job(job_id, ctx)
    assert store.get(job_id).status is JobStatus.QUEUED
    blobs.fail_reads = False
    assert process_job(job_id, ctx) is Outcome.SUCCEEDED
    assert store.get(job_id).attempts == 2


def test_pipeline_give_up_fails_job_after_retries(store):
    ctx = _ctx(store, FakeEngine())
    job_id = _queue_job(store, ctx)
    assert give_up(job_id, ctx, "object store down for good") is Outcome.FAILED
    assert store.get(job_id).error_code == "unavailable"


def test_pipeline_timeout_aborts_engine_request(store):
    engine = FakeEngine(block=threading.Event())
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx, timeout=1)
    assert process_job(job_id, ctx) is Outcome.FAILED
    assert engine.aborted == [job_id]
    job = store.get(job_id)
    assert job.error_code == "timeout"
    assert (job.prompt_tokens, job.completion_tokens) == (11, 2)


def test_pipeline_running_job_is_taken_over_only_after_lease(store):
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    store.claim(job_id, NOW, timedelta(seconds=90))  # a worker that died mid-job
    assert process_job(job_id, ctx) is Outcome.SKIPPED
    later = dataclasses.replace(
        _ctx(store, engine, ctx.blobs), clock=lambda: NOW + timedelta(seconds=91)
    )
    assert process_job(job_id, later) is Outcome.SUCCEEDED


def start_running(
    job_id: str, ctx: WorkerContext, engine: FakeEngine
) -> tuple[threading.Thread, list[Outcome]]:
    """Run ``job_id`` on a thread until its (blocking) engine has the request; the thread and
    the list its outcome lands in."""
    outcome: list[Outcome] = []
    runner = threading.Thread(target=lambda: outcome.append(process_job(job_id, ctx)))
    runner.start()
    while not engine.calls:
        time.sleep(0.01)
    return runner, outcome


def test_pipeline_cancel_aborts_running_request_and_keeps_usage(store):
    engine = FakeEngine(block=threading.Event())
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    runner, outcome = start_running(job_id, ctx, engine)
    assert store.request_cancel(job_id, NOW)
    runner.join(10)
    ctx.cancels.close()
    assert outcome == [Outcome.CANCELED]
    assert engine.aborted == [job_id]
    job = store.get(job_id)
    assert job.status is JobStatus.CANCELED
    assert (job.prompt_tokens, job.completion_tokens) == (11, 2)


def test_pipeline_canceled_queued_job_never_runs(store):
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    assert store.cancel_queued(job_id, NOW)
    assert process_job(job_id, ctx) is Outcome.SKIPPED
    assert engine.calls == []


class RecordingEvents:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def job_changed(self, job: Any) -> None:
        self.seen.append((job.id, job.status.value))


def test_pipeline_announces_start_and_finish(store):
    events = RecordingEvents()
    ctx = _ctx(store, FakeEngine(), events=events)
    job_id = _queue_job(store, ctx)
    assert process_job(job_id, ctx) is Outcome.SUCCEEDED
    assert process_job(job_id, ctx) is Outcome.SKIPPED  # a duplicate announces nothing
    assert events.seen == [(job_id, "running"), (job_id, "succeeded")]


def test_pipeline_expired_job_never_runs_nor_charges(store):
    engine = FakeEngine()
    events = RecordingEvents()
    ctx = _ctx(store, engine, events=events)
    job_id = _queue_job(store, ctx, expires_at=NOW - timedelta(seconds=1))
    assert process_job(job_id, ctx) is Outcome.EXPIRED
    assert engine.calls == []
    job = store.get(job_id)
    assert job.status is JobStatus.EXPIRED and job.attempts == 0
    assert job.prompt_tokens is None and job.completion_tokens is None
    assert events.seen == [(job_id, "expired")]
    assert process_job(job_id, ctx) is Outcome.SKIPPED


def test_pipeline_leaves_a_job_of_a_model_it_does_not_serve_queued_and_retries(store):
    engine = FakeEngine()
    ctx = _ctx(store, engine)
    job_id = _queue_job(store, ctx)
    ctx = dataclasses.replace(
        ctx, registry=build_registry(Settings(served_models=("llama-3.2-90b-vision-instruct",)))
    )
    with pytest.raises(NotServedHere, match="not served by this worker"):
        process_job(job_id, ctx)
    job = store.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0) and engine.calls == []
