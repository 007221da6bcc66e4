"""Batching benchmark: the whole service against its bare engine, side by side in one run.

``python -m infra.bench.batching --model loupe-tiny-mllama --n 32 --max-tokens 64
[--concurrency C] [--json-out PATH] [--repeat K] [--poll-interval S] [--models-dir DIR]
[--workdir DIR]``

1. Starts a private stack in a temporary directory, all on 127.0.0.1 and free ports: Redis,
   SeaweedFS (S3), a fresh SQLite database (migrated with ``services.cli migrate``), a user key
   (``services.cli create-key``), the API under gunicorn (2 workers) and ONE Celery worker
   (``--pool threads --concurrency C --prefetch-multiplier 1``) with
   ``LOUPE_WORKER_CONCURRENCY=C`` and ``LOUPE_DEFAULT_MODEL=<model>`` (preloaded before the
   worker logs ``ready.``). The engine's batch size is the model's ``max_num_seqs`` (16 for the
   tiny model), whatever C is. The stack is the local one (``infra.localstack.stack.bring_up``
   with :func:`bench_plan`): the same parts, environment and readiness checks, with the
   bench's worker name, model and concurrency, and no light worker.
2. Warm-up: one job through the API, not timed.
3. Service phase: N identical jobs (the same generated PNG, prompt, ``max_tokens``,
   ``temperature: 0`` and ``ignore_eos: true``, so each generates exactly ``max_tokens``) are
   POSTed at once from N client threads; one poller walks the accepted jobs in order (a GET every
   ``--poll-interval`` s while the oldest unfinished job runs, so polling adds little load).
   ``service_rps = N / (last job seen terminal - first submit)``, wall clock, client side. Every
   job must succeed with ``completion_tokens == max_tokens``, or the run fails. The diagnostics
   also give the rate by the API's own ``completed_at`` (no polling delay) and the engine batches
   the jobs ran in (clusters of ``completed_at``: with ``ignore_eos`` a batch finishes together).
4. The stack is stopped (its idle processes would compete for the CPU), then the bench process
   loads the same model with ``workers.engines.factory.load_engine`` (same settings, so the same
   ``max_batch_size``), warms it up with one request, and runs the same N requests (the same PNG
   through ``workers.images.decode_image``, one user message [image, text], the same sampling)
   from N threads released together by a barrier (``engine_batch_rps``), then one at a time
   (``engine_serial_rps``).
5. Prints diagnostics and a table (phase, requests, seconds, req/s, tokens/s), then, as the LAST
   stdout line, one JSON object: ``bench, engine, model, n, max_tokens, concurrency,
   service_rps, engine_batch_rps, engine_serial_rps, ratio_service_to_engine
   (service/engine batch), batch_speedup (engine batch/serial), service_vs_serial``; the same
   object goes to ``--json-out`` when given.

``--repeat K`` times each phase K times and reports the fastest run of each (on a shared machine
other tenants only ever add time); every run's rate is printed in the diagnostics.

Everything started is stopped on every exit path (error, Ctrl-C, SIGTERM). The work directory
(logs in ``logs/``) is removed after a successful run unless ``--workdir`` names it, and kept,
with its path printed, after a failure.

Exit codes: 0 success; 1 the stack did not start, a job or request failed, or a check failed;
130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from infra.localstack.demo import TERMINAL, sample_png
from infra.localstack.parts import (
    READY_TIMEOUT_S,
    Part,
    api_part,
    dispatcher_part,
    inference_worker_part,
)
from infra.localstack.servers import ServerStartError
from infra.localstack.stack import StackError, StackPaths, StackPlan, bring_up, launched
from services.catalog.registry import build_registry
from services.catalog.spec import ModelSpec
from services.errors import LoupeError
from services.settings import Settings, load_settings
from services.types import ContentPart, Message, SamplingParams

if TYPE_CHECKING:
    from workers.engines.base import Engine, GenerationRequest, GenerationResult

PROMPT = "Describe this image."
WORKER_NAME = "loupe-bench"
POLL_INTERVAL_S = 0.05
PHASE_TIMEOUT_S = 900.0
HTTP_TIMEOUT_S = 60.0
BATCH_GAP_S = 0.1
"""Completions further apart than this are counted as separate engine batches (diagnostic)."""


class BenchError(RuntimeError):
    """A phase failed or produced results that do not meet the benchmark's contract."""


@dataclass(frozen=True)
class BenchConfig:
    """What to run; ``concurrency`` is the worker's Celery threads (``--concurrency`` and
    ``LOUPE_WORKER_CONCURRENCY``); the engine's batch size is the model's ``max_num_seqs``."""

    model: str
    n: int
    max_tokens: int
    concurrency: int
    poll_interval: float = POLL_INTERVAL_S
    repeat: int = 1
    """Timed runs of each phase; the fastest is reported (other tenants only ever add time)."""
    models_dir: Path | None = None
    ready_timeout: float = READY_TIMEOUT_S
    phase_timeout: float = PHASE_TIMEOUT_S


@dataclass(frozen=True)
class PhaseResult:
    """``requests`` requests that produced ``completion_tokens`` tokens in ``seconds``."""

    name: str
    requests: int
    seconds: float
    completion_tokens: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds


@dataclass(frozen=True)
class ServiceResult:
    """The service phase, with what the job JSON tells about where its time went."""

    phase: PhaseResult
    submit_seconds: float
    """First submit to the last 202."""
    server_seconds: float
    """First submit to the latest ``completed_at`` the API reported (no polling delay)."""
    queue_seconds: list[float]
    run_seconds: list[float]
    batches: list[tuple[int, float]]
    """(jobs, seconds from the first submit to its last ``completed_at``) per engine batch,
    inferred from clusters of ``completed_at``."""


@dataclass(frozen=True)
class EngineResults:
    """Every repeat of the engine phases, and the batch sizes the batch phases ran with."""

    batch: list[PhaseResult]
    serial: list[PhaseResult]
    batch_sizes: dict[int, int] = field(default_factory=dict)
    max_batch_size: int | None = None


@dataclass(frozen=True)
class BenchStack:
    """The running private stack: where the API is and the key to use it."""

    api_url: str
    api_key: str
    env: Mapping[str, str]
    paths: StackPaths


# --------------------------------------------------------------------------- the stack


def bench_parts(_paths: StackPaths, env: Mapping[str, str]) -> list[Part]:
    """The API, ONE inference worker (named ``loupe-bench``) and the dispatcher; no light
    worker."""
    return [api_part(env), inference_worker_part(env, node=WORKER_NAME), dispatcher_part(env)]


def bench_plan(config: BenchConfig) -> StackPlan:
    """The local stack's plan with the bench's parts, one user key, and the bench's model,
    concurrency (worker threads) and models dir on top of the stack's settings."""
    overrides = {
        "LOUPE_WORKER_CONCURRENCY": str(config.concurrency),
        "LOUPE_DEFAULT_MODEL": config.model,
    }
    if config.models_dir is not None:
        overrides["LOUPE_MODELS_DIR"] = str(config.models_dir.resolve())
    return StackPlan(
        app_parts=bench_parts, keys={"LOUPE_API_KEY": ("bench-user", "user")}, overrides=overrides
    )


@contextlib.contextmanager
def bench_stack(paths: StackPaths, config: BenchConfig) -> Iterator[BenchStack]:
    """Redis, SeaweedFS, migrated SQLite, a user key, gunicorn and one worker; stopped on exit.

    Every process is attached (owned and reaped here) and stopped in reverse start order however
    the block ends.
    """
    with launched(paths, say=_say) as launcher:
        values = bring_up(launcher, bench_plan(config), config.ready_timeout)
        yield BenchStack(
            api_url=values["LOUPE_API_URL"],
            api_key=values["LOUPE_API_KEY"],
            env=values,
            paths=paths,
        )
        _say("stopping the stack")


# --------------------------------------------------------------------------- service phase


def job_body(image: bytes, model: str, max_tokens: int, prompt: str = PROMPT) -> dict[str, Any]:
    """The chat-completions JSON body of one bench job (greedy, exactly ``max_tokens`` tokens)."""
    url = "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }


def _session(stack: BenchStack, pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
    session.mount("http://", adapter)
    session.headers["Authorization"] = f"Bearer {stack.api_key}"
    return session


def _submit(session: requests.Session, api_url: str, body: Mapping[str, Any]) -> tuple[str, float]:
    """POST one job; (its id, when the 202 arrived), or BenchError."""
    with session.post(f"{api_url}/v1/jobs", json=body, timeout=HTTP_TIMEOUT_S) as response:
        if response.status_code != 202:
            raise BenchError(f"POST /v1/jobs answered {response.status_code}: {response.text}")
        job_id = str(response.json()["id"])
    return job_id, time.time()


def _get_job(session: requests.Session, api_url: str, job_id: str) -> dict[str, Any]:
    with session.get(f"{api_url}/v1/jobs/{job_id}", timeout=HTTP_TIMEOUT_S) as response:
        if response.status_code != 200:
            raise BenchError(f"GET /v1/jobs/{job_id} answered {response.status_code}")
        job: dict[str, Any] = response.json()
    return job


def job_problems(job: Mapping[str, Any], max_tokens: int) -> list[str]:
    """Why ``job`` is not a valid bench result (empty when it is)."""
    if job.get("status") != "succeeded":
        return [f"job {job.get('id')} is {job.get('status')!r}: {job.get('error')!r}"]
    usage = job.get("usage") or {}
    if usage.get("completion_tokens") != max_tokens:
        got = usage.get("completion_tokens")
        return [f"job {job.get('id')} produced {got} tokens, not max_tokens={max_tokens}"]
    return []


def _epoch(timestamp: str) -> float:
    parsed = datetime.fromisoformat(timestamp)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def infer_batches(completed: Sequence[float], gap: float = BATCH_GAP_S) -> list[tuple[int, float]]:
    """(size, last time) of each cluster of completion times, in time order.

    With ``ignore_eos`` every row of an engine batch ends at the same step, so a cluster of
    completions is one batch (a diagnostic: two batches ending within ``gap`` merge).
    """
    clusters: list[tuple[int, float]] = []
    for moment in sorted(completed):
        if clusters and moment - clusters[-1][1] <= gap:
            clusters[-1] = (clusters[-1][0] + 1, moment)
        else:
            clusters.append((1, moment))
    return clusters


def run_jobs(
    stack: BenchStack,
    body: Mapping[str, Any],
    n: int,
    *,
    poll_interval: float,
    timeout: float,
) -> tuple[float, float, list[tuple[dict[str, Any], float]]]:
    """Submit ``n`` jobs at once and wait for all of them.

    Returns (first submit, last 202, [(final job JSON, when the client saw it terminal)] in
    acceptance order), wall-clock epoch seconds. The poller GETs the oldest job not yet seen
    terminal, moves on while jobs are terminal, and sleeps ``poll_interval`` when one is not.
    """
    accepted: list[tuple[str, float]] = []
    finished: list[tuple[dict[str, Any], float]] = []
    with (
        _session(stack, n + 1) as session,
        ThreadPoolExecutor(max_workers=n, thread_name_prefix="bench-submit") as pool,
    ):
        start = time.time()
        submits: list[Future[tuple[str, float]]] = [
            pool.submit(_submit, session, stack.api_url, body) for _ in range(n)
        ]
        deadline = time.monotonic() + timeout
        waiting: list[Future[tuple[str, float]]] = list(submits)
        pending: list[str] = []
        while waiting or pending:
            done: list[Future[tuple[str, float]]] = []
            still: list[Future[tuple[str, float]]] = []
            for future in waiting:  # one done() call each: a future must land in one list
                (done if future.done() else still).append(future)
            waiting = still
            for job_id, at in sorted((f.result() for f in done), key=lambda item: item[1]):
                accepted.append((job_id, at))
                pending.append(job_id)
            while pending:
                job = _get_job(session, stack.api_url, pending[0])
                if job.get("status") not in TERMINAL:
                    break
                finished.append((job, time.time()))
                pending.pop(0)
            if not (waiting or pending):
                break
            if time.monotonic() > deadline:
                unfinished = len(pending) + len(waiting)
                raise BenchError(f"{unfinished} of {n} jobs unfinished after {timeout:.0f} s")
            time.sleep(poll_interval)
    return start, max(at for _, at in accepted), finished


def service_phase(stack: BenchStack, config: BenchConfig, image: bytes) -> list[ServiceResult]:
    """Warm up with one job, then time ``config.n`` concurrent jobs, ``config.repeat`` times."""
    body = job_body(image, config.model, config.max_tokens)
    _say("warm-up: one job through the API")
    _, _, warm = run_jobs(
        stack, body, 1, poll_interval=config.poll_interval, timeout=config.phase_timeout
    )
    _check_jobs([job for job, _ in warm], config.max_tokens)
    runs = []
    for attempt in range(1, config.repeat + 1):
        _say(f"service phase {attempt}/{config.repeat}: {config.n} jobs through the API")
        runs.append(_timed_service_run(stack, config, body))
    return runs


def _timed_service_run(
    stack: BenchStack, config: BenchConfig, body: Mapping[str, Any]
) -> ServiceResult:
    start, last_accepted, finished = run_jobs(
        stack, body, config.n, poll_interval=config.poll_interval, timeout=config.phase_timeout
    )
    jobs = [job for job, _ in finished]
    _check_jobs(jobs, config.max_tokens)
    end = max(seen for _, seen in finished)
    completed = [_epoch(job["completed_at"]) for job in jobs]
    metrics = [job.get("metrics") or {} for job in jobs]
    return ServiceResult(
        phase=PhaseResult(
            name="service (API)",
            requests=len(jobs),
            seconds=end - start,
            completion_tokens=sum(int(job["usage"]["completion_tokens"]) for job in jobs),
        ),
        submit_seconds=last_accepted - start,
        server_seconds=max(completed) - start,
        queue_seconds=[float(m.get("queue_seconds") or 0.0) for m in metrics],
        run_seconds=[float(m.get("run_seconds") or 0.0) for m in metrics],
        batches=[(size, moment - start) for size, moment in infer_batches(completed)],
    )


def _check_jobs(jobs: Sequence[Mapping[str, Any]], max_tokens: int) -> None:
    problems = [problem for job in jobs for problem in job_problems(job, max_tokens)]
    if problems:
        shown = "\n  ".join(problems[:10])
        raise BenchError(f"{len(problems)} of {len(jobs)} jobs are not valid:\n  {shown}")


# --------------------------------------------------------------------------- engine phases


def engine_settings(env: Mapping[str, str]) -> Settings:
    """The worker's settings (same environment, so the same models dir and batch size)."""
    return load_settings(env)


def model_spec(settings: Settings, model: str) -> ModelSpec:
    return build_registry(settings).get(model)


def engine_requests(
    image: bytes, max_tokens: int, n: int, tag: str, prompt: str = PROMPT
) -> list[GenerationRequest]:
    """``n`` requests with the service jobs' contents: one user message [image, text]."""
    from services.storage.images import ImageLimits
    from workers.engines.base import GenerationRequest
    from workers.images import decode_image

    decoded = decode_image(image, ImageLimits.from_settings(Settings()))
    message = Message(
        role="user",
        content=(ContentPart(type="image", image_index=0), ContentPart(type="text", text=prompt)),
    )
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    return [
        GenerationRequest(
            request_id=f"bench-{tag}-{index}", messages=(message,), images=[decoded], params=params
        )
        for index in range(n)
    ]


def _check_results(results: Sequence[GenerationResult], max_tokens: int, phase: str) -> int:
    """Total completion tokens; BenchError unless every result has exactly ``max_tokens``."""
    wrong = [r for r in results if r.completion_tokens != max_tokens or r.finish_reason != "length"]
    if wrong:
        sample = wrong[0]
        raise BenchError(
            f"{phase}: {len(wrong)} of {len(results)} results are not {max_tokens} tokens "
            f"with finish_reason 'length' (e.g. {sample.completion_tokens}, "
            f"{sample.finish_reason!r})"
        )
    return sum(r.completion_tokens for r in results)


def run_concurrently(
    engine: Engine, batch: Sequence[GenerationRequest], timeout: float
) -> tuple[float, list[GenerationResult]]:
    """Call ``generate`` for every request from its own thread, all released at once.

    Returns (seconds from the release to the last result, results in request order).
    """
    released: list[float] = []
    barrier = threading.Barrier(len(batch), action=lambda: released.append(time.perf_counter()))

    def call(request: GenerationRequest) -> GenerationResult:
        barrier.wait(timeout)
        return engine.generate(request)

    pool = ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="bench-engine")
    try:
        futures = [pool.submit(call, request) for request in batch]
        results = [future.result(timeout) for future in futures]
        ended = time.perf_counter()
    finally:
        barrier.abort()  # only matters on failure: no thread waits for a partner that never comes
        pool.shutdown(wait=False, cancel_futures=True)
    return ended - released[0], results


def run_serially(
    engine: Engine, batch: Sequence[GenerationRequest]
) -> tuple[float, list[GenerationResult]]:
    """Call ``generate`` for every request, one after another; (seconds, results)."""
    started = time.perf_counter()
    results = [engine.generate(request) for request in batch]
    return time.perf_counter() - started, results


def engine_phases(
    spec: ModelSpec, settings: Settings, config: BenchConfig, image: bytes
) -> EngineResults:
    """Load the engine in this process, warm it up, then the batch and the serial phases
    (each ``config.repeat`` times)."""
    from workers.engines.factory import load_engine

    _say(f"loading the {spec.engine} engine for {spec.name} in the bench process")
    engine = load_engine(spec, settings)
    try:
        warm = engine_requests(image, config.max_tokens, 1, "warmup")
        _check_results([engine.generate(warm[0])], config.max_tokens, "engine warm-up")
        counts: Callable[[], dict[int, int]] | None = getattr(engine, "batch_size_counts", None)
        before = counts() if counts is not None else {}
        batch: list[PhaseResult] = []
        for attempt in range(1, config.repeat + 1):
            _say(f"engine batch phase {attempt}/{config.repeat}: {config.n} requests at once")
            requests_ = engine_requests(image, config.max_tokens, config.n, f"batch{attempt}")
            seconds, results = run_concurrently(engine, requests_, config.phase_timeout)
            tokens = _check_results(results, config.max_tokens, "engine batch")
            batch.append(PhaseResult("engine batch", len(results), seconds, tokens))
        after = counts() if counts is not None else {}
        serial: list[PhaseResult] = []
        for attempt in range(1, config.repeat + 1):
            _say(f"engine serial phase {attempt}/{config.repeat}: {config.n} requests in turn")
            requests_ = engine_requests(image, config.max_tokens, config.n, f"serial{attempt}")
            seconds, results = run_serially(engine, requests_)
            tokens = _check_results(results, config.max_tokens, "engine serial")
            serial.append(PhaseResult("engine serial", len(results), seconds, tokens))
    finally:
        engine.close()
    sizes = {size: after[size] - before.get(size, 0) for size in sorted(after)}
    return EngineResults(
        batch=batch,
        serial=serial,
        batch_sizes={size: count for size, count in sizes.items() if count},
        max_batch_size=getattr(engine, "max_batch_size", None),
    )


# --------------------------------------------------------------------------- report


def fastest(runs: Sequence[PhaseResult]) -> PhaseResult:
    return min(runs, key=lambda run: run.seconds)


def fastest_service(runs: Sequence[ServiceResult]) -> ServiceResult:
    return min(runs, key=lambda run: run.phase.seconds)


def summary(
    spec: ModelSpec, config: BenchConfig, service: Sequence[ServiceResult], engine: EngineResults
) -> dict[str, Any]:
    """The result line's object: the fastest run of each phase, rates in requests per second,
    rounded to 3 decimals."""
    service_rps = fastest_service(service).phase.rps
    batch_rps = fastest(engine.batch).rps
    serial_rps = fastest(engine.serial).rps
    return {
        "bench": "batching",
        "engine": spec.engine,
        "model": spec.name,
        "n": config.n,
        "max_tokens": config.max_tokens,
        "concurrency": config.concurrency,
        "service_rps": round(service_rps, 3),
        "engine_batch_rps": round(batch_rps, 3),
        "engine_serial_rps": round(serial_rps, 3),
        "ratio_service_to_engine": round(service_rps / batch_rps, 3),
        "batch_speedup": round(batch_rps / serial_rps, 3),
        "service_vs_serial": round(service_rps / serial_rps, 3),
    }


def format_table(phases: Sequence[PhaseResult]) -> str:
    lines = [f"{'phase':<16}{'requests':>10}{'seconds':>10}{'req/s':>10}{'tokens/s':>11}"]
    lines += [
        f"{p.name:<16}{p.requests:>10}{p.seconds:>10.3f}{p.rps:>10.3f}{p.tokens_per_second:>11.1f}"
        for p in phases
    ]
    return "\n".join(lines)


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"min {min(values):.2f} / median {statistics.median(values):.2f} / max {max(values):.2f}"


def _batches(run: ServiceResult) -> str:
    return ", ".join(f"{size} @ {end:.2f} s" for size, end in run.batches)


def format_diagnostics(runs: Sequence[ServiceResult], engine: EngineResults) -> str:
    """Where the (fastest) service run's time went, and the batch sizes each side ran."""
    service = fastest_service(runs)
    phase = service.phase
    poll_lag = phase.seconds - service.server_seconds
    lines = []
    if len(runs) > 1:
        rates = {
            "service": [run.phase.rps for run in runs],
            "engine batch": [run.rps for run in engine.batch],
            "engine serial": [run.rps for run in engine.serial],
        }
        shown = "; ".join(f"{k} {', '.join(f'{v:.3f}' for v in vs)}" for k, vs in rates.items())
        lines.append(f"repeats (req/s, the fastest of each is reported): {shown}")
        lines += [f"service run {i}: batches {_batches(run)}" for i, run in enumerate(runs, 1)]
    lines.extend(
        [
            f"service: all {phase.requests} submitted (202) after {service.submit_seconds:.3f} s; "
            f"last completed_at at {service.server_seconds:.3f} s "
            f"({phase.requests / service.server_seconds:.3f} req/s server side); "
            f"seen by the poller at {phase.seconds:.3f} s (+{poll_lag:.3f} s)",
            f"service: engine batches (jobs @ end) inferred from completed_at: {_batches(service)}",
            f"service: queue_seconds {_spread(service.queue_seconds)}; "
            f"run_seconds {_spread(service.run_seconds)}",
            f"engine: max batch size {engine.max_batch_size or '?'}; batch phase generate() "
            f"batch sizes {engine.batch_sizes or '?'}",
        ]
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (``finally`` blocks run, the stack is stopped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(config: BenchConfig, paths: StackPaths) -> dict[str, Any]:
    """Every phase in order; the result object. The stack is down before the engine loads."""
    image = sample_png()
    model_spec(load_settings(), config.model)  # an unknown model fails before anything starts
    with bench_stack(paths, config) as stack:
        env = dict(stack.env)
        settings = engine_settings(env)
        spec = model_spec(settings, config.model)
        service = service_phase(stack, config, image)
    engine = engine_phases(spec, settings, config, image)
    print(format_diagnostics(service, engine))
    fastest_runs = [fastest_service(service).phase, fastest(engine.batch), fastest(engine.serial)]
    print(format_table(fastest_runs))
    return summary(spec, config, service, engine)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bench.batching",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="loupe-tiny-mllama", help="a served model's name")
    parser.add_argument("--n", type=_positive, default=32, help="requests per phase")
    parser.add_argument("--max-tokens", type=_positive, default=64, help="tokens per request")
    parser.add_argument(
        "--concurrency", type=_positive, default=None, help="worker threads and engine batch size"
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--poll-interval", type=float, default=POLL_INTERVAL_S, help="seconds")
    parser.add_argument(
        "--repeat", type=_positive, default=1, help="timed runs per phase; the fastest counts"
    )
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="LOUPE_MODELS_DIR (default: in the workdir)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="state and logs (default: a temp dir)"
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; the result JSON is the last stdout line. Exit 0, 1 or 130."""
    args = _parser().parse_args(argv)
    config = BenchConfig(
        model=args.model,
        n=args.n,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency or args.n,
        poll_interval=args.poll_interval,
        repeat=args.repeat,
        models_dir=args.models_dir,
    )
    keep = args.workdir is not None
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="loupe-bench-"))).resolve()
    paths = StackPaths.at(workdir)
    ok = False
    try:
        with _sigterm_as_exit():
            result = run(config, paths)
        ok = True
    except (BenchError, StackError, ServerStartError, LoupeError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        logs = paths.dev / "logs"
        if not ok and logs.exists():
            print(f"bench: logs kept in {logs}", file=sys.stderr)
        elif not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    line = json.dumps(result)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
