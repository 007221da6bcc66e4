"""Dispatch benchmark: what SQL as the queue of record costs, and what the dispatcher buys.

``python -m infra.bench.dispatch [--idle-rounds 30] [--jobs 5000] [--keys 10] [--backlog 1000]
[--database-url URL] [--json-out PATH] [--workdir DIR]``

Real parts only, all on 127.0.0.1 and free ports: a private Redis (the broker), SeaweedFS (S3),
the database (a fresh SQLite file in the work directory, or ``--database-url``, which must hold
no queued or running job; both migrated to head here), the tiny Mllama model built into the work
directory, the dispatcher process (``python -m services.dispatch``) and Celery inference workers
(``--pool threads``, 4 slots each). Jobs are submitted through the real Flask app in this
process (``build_api`` + ``create_app``'s test client: the server's work, no HTTP parsing).
Leases are short (``LOUPE_LEASE_SECONDS=10``, renewed every 2 s, swept every 1 s) so that step 4
ends soon.

1. Dispatch throughput, with no engine work (in this process, before any other part runs):
   ``--keys`` keys and ``--jobs`` queued jobs split between them are inserted straight into SQL,
   a fake worker heartbeat with 500 slots opens the window wide, and a ``Dispatcher`` built by
   ``services.dispatch.root.build_dispatcher`` runs passes until every job is handed to the
   broker (real Celery messages in the real Redis). Between passes the handed-out jobs are
   marked canceled in bulk, which frees the window (not timed). ``dispatch_jobs_per_s = jobs /
   seconds spent inside dispatch()``. The broker must hold exactly ``--jobs`` messages. The
   rows and the broker's database are cleared afterwards.
2. Idle overhead: the dispatcher and one worker start. One key submits one job at a time
   (``max_tokens`` 1) and waits for it to finish; after 3 warm-up jobs, ``--idle-rounds``
   rounds give ``started_at - created_at`` per job: from the API's commit to the worker's
   claim, through the nudge, a dispatch pass, the broker and the worker's pickup. p50 and p95.
3. Fairness: key A submits one job (its image goes to S3 once), then ``--backlog`` copies of
   that row are inserted into SQL as queued jobs (``max_tokens`` 8, ``ignore_eos``) and the
   dispatcher is nudged. Once 16 of them (two windows) have started, key B submits one job.
   ``fair_wait_s`` is B's ``started_at - created_at``; ``fair_ahead`` counts A's jobs that
   started in between; ``backlog_jobs_per_s`` is the rate A's jobs started at, from A's first
   start to B's; ``fifo_wait_s`` is A's jobs still queued at B's submit divided by that rate:
   what B would have waited in one first-in-first-out queue. A's remaining jobs are then
   canceled in SQL and the run waits for the workers to be idle.
4. Worker-kill recovery: a second worker starts; a third key submits one long job
   (``max_tokens`` 512, ``ignore_eos``); once it runs, the worker running it (the one whose log
   names it) gets SIGKILL. ``recovery_s`` is from the kill to the job running again
   (``attempts == 2``) on the other worker: the lease lapsing, the dispatcher's sweep, a
   dispatch and a claim. The job is then canceled, and the run waits for it to end.
5. Prints a table (measurement, value, unit, detail), then, as the LAST stdout line, one JSON
   object: ``bench, database, idle_rounds, idle_p50_ms, idle_p95_ms, dispatch_jobs,
   dispatch_keys, dispatch_passes, dispatch_jobs_per_s, backlog, fair_wait_s, fair_ahead,
   backlog_jobs_per_s, fifo_wait_s, recovery_s, lease_seconds``; the same object goes to
   ``--json-out`` when given. Progress goes to stderr.

Checks: every job submitted must succeed; B must start at least 10 times sooner than FIFO would
have let it, with at most two windows (the worker's slots + ``LOUPE_DISPATCH_MARGIN``) of A's jobs
starting before it; the killed worker's job must run again within 45 s. A failed check is named
on stderr after the table and the JSON line.

Everything started is stopped on every exit path. The work directory (logs in ``logs/``) is
removed after a successful run unless ``--workdir`` names it, and kept, with its path printed,
after a failure.

Exit codes: 0 success; 1 a part did not start, a step failed, or a check failed; 130
interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.engine import make_url

from infra.bench.batching import _sigterm_as_exit, job_body
from infra.localstack.demo import sample_png
from infra.localstack.parts import (
    READY_TIMEOUT_S,
    Part,
    dispatcher_part,
    inference_worker_part,
    process_env,
    start_parts,
)
from infra.localstack.servers import (
    ServerProcess,
    ServerStartError,
    random_credentials,
    start_redis,
    start_seaweed,
)
from infra.models import build_local_models
from services.admin.heartbeats import RedisHeartbeats
from services.admin.types import WorkerInfo
from services.api.app import create_app
from services.api.root import ApiRoot, build_api
from services.auth.keys import Role, SqlKeyStore
from services.db import make_engine, upgrade_to_head
from services.db.schema import jobs
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.root import build_dispatcher
from services.errors import LoupeError
from services.jobs.handoff import RedisDispatchNudge
from services.jobs.queue import priority_queue_names
from services.jobs.service import new_job_id
from services.settings import Settings, load_settings

MODEL = "loupe-tiny-mllama"
BUCKET = "loupe-bench"
WORKER_SLOTS = 4
LEASE_SECONDS = 10
IDLE_WARMUP = 3
FAIR_TOKENS = 8
LONG_TOKENS = 512
FAKE_SLOTS = 500
"""The fake heartbeat's slots in step 1: a window wide enough that a pass hands out hundreds."""
FAIR_FACTOR = 10
"""B must start at least this many times sooner than FIFO would have let it."""
RECOVERY_LIMIT_S = 45.0
"""The acceptance line of the crash-recovery end-to-end test, with the same lease settings."""
WORKERS = ("worker-1", "worker-2")
"""The inference workers' names: the first runs steps 2-4, the second joins for step 4."""
POLL_S = 0.01
STEP_TIMEOUT_S = 180.0
TERMINAL = ("succeeded", "failed", "canceled", "expired")
LIVE = ("queued", "running")
BENCH_ENV = {
    "LOUPE_WORKER_CONCURRENCY": str(WORKER_SLOTS),
    "LOUPE_HEARTBEAT_SECONDS": "1",
    "LOUPE_LEASE_SECONDS": str(LEASE_SECONDS),
    "LOUPE_LEASE_RENEW_SECONDS": "2",
    "LOUPE_LOST_SWEEP_SECONDS": "1",
    "LOUPE_MAX_ATTEMPTS": "3",
}
"""On top of the stack's URLs and credentials, for every part."""
# A finished job keeps no dispatch or run state: a copy of its row with these is a fresh one.
FRESH_JOB: Mapping[str, Any] = {
    "status": "queued", "attempts": 0, "lost_attempts": 0, "started_at": None,
    "completed_at": None, "lease_expires_at": None, "cancel_requested_at": None,
    "output_text": None, "finish_reason": None, "prompt_tokens": None, "completion_tokens": None,
    "error_code": None, "error_message": None, "idempotency_key": None, "request_hash": None,
    "data_removed_at": None, "queued_at": None, "queue_seconds": None, "billed": None,
    "dispatched_at": None, "retried_from_status": None,
}  # fmt: skip


class BenchError(RuntimeError):
    """A step failed: a part, a job, or a timeout."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Throughput:
    """Step 1: ``jobs`` jobs of ``keys`` keys handed out in ``passes`` passes taking ``seconds``."""

    jobs: int
    keys: int
    passes: int
    seconds: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


@dataclass(frozen=True)
class Fairness:
    """Step 3: B waited ``wait_s`` while ``ahead`` of A's jobs started; ``queued_ahead`` of
    A's jobs were still queued at B's submit, and A's jobs started at ``backlog_rate``/s."""

    backlog: int
    wait_s: float
    ahead: int
    queued_ahead: int
    backlog_rate: float
    window: int

    @property
    def fifo_wait_s(self) -> float:
        """What B would have waited behind all of A's queued jobs in one FIFO queue."""
        return self.queued_ahead / self.backlog_rate


@dataclass(frozen=True)
class Results:
    database: str
    idle_ms: Sequence[float]
    throughput: Throughput
    fairness: Fairness
    recovery_s: float
    lease_seconds: int = LEASE_SECONDS


def percentile(values: Sequence[float], q: int) -> float:
    """The nearest-rank ``q``-th percentile of ``values`` (non-empty), rounded to 2 decimals."""
    ordered = sorted(values)
    return round(ordered[max(0, -(-len(ordered) * q // 100) - 1)], 2)


def summary(results: Results) -> dict[str, Any]:
    """The result line's object (see the module docstring)."""
    fair, rate = results.fairness, results.throughput
    return {
        "bench": "dispatch",
        "database": results.database,
        "idle_rounds": len(results.idle_ms),
        "idle_p50_ms": percentile(results.idle_ms, 50),
        "idle_p95_ms": percentile(results.idle_ms, 95),
        "dispatch_jobs": rate.jobs,
        "dispatch_keys": rate.keys,
        "dispatch_passes": rate.passes,
        "dispatch_jobs_per_s": round(rate.jobs_per_s, 1),
        "backlog": fair.backlog,
        "fair_wait_s": round(fair.wait_s, 3),
        "fair_ahead": fair.ahead,
        "backlog_jobs_per_s": round(fair.backlog_rate, 2),
        "fifo_wait_s": round(fair.fifo_wait_s, 1),
        "recovery_s": round(results.recovery_s, 2),
        "lease_seconds": results.lease_seconds,
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The table printed before the JSON line, from :func:`summary`'s object."""
    r = result
    rows = [
        ("idle overhead p50", r["idle_p50_ms"], "ms", f"commit -> claim, {r['idle_rounds']} jobs"),
        ("idle overhead p95", r["idle_p95_ms"], "ms", ""),
        ("dispatch throughput", r["dispatch_jobs_per_s"], "jobs/s",
         f"{r['dispatch_jobs']} jobs, {r['dispatch_keys']} keys, {r['dispatch_passes']} passes"),
        (f"start behind {r['backlog']} jobs", r["fair_wait_s"], "s",
         f"{r['fair_ahead']} of the other key's jobs started meanwhile"),
        ("same job, FIFO estimate", r["fifo_wait_s"], "s",
         f"its queued backlog at {r['backlog_jobs_per_s']} jobs/s"),
        ("kill -9 -> running again", r["recovery_s"], "s", f"lease {r['lease_seconds']} s"),
    ]  # fmt: skip
    lines = [f"{'measurement':<28}{'value':>10}  {'unit':<7}detail"]
    lines += [f"{name:<28}{value:>10}  {unit:<7}{detail}" for name, value, unit, detail in rows]
    return "\n".join(lines)


def problems(results: Results) -> list[str]:
    """The checks that failed (empty when every one passed)."""
    fair = results.fairness
    found = []
    if fair.wait_s * FAIR_FACTOR > fair.fifo_wait_s:
        found.append(
            f"fairness: the second key waited {fair.wait_s:.2f} s, not {FAIR_FACTOR}x below "
            f"the FIFO estimate of {fair.fifo_wait_s:.2f} s"
        )
    if fair.ahead > 2 * fair.window:
        found.append(
            f"fairness: {fair.ahead} of the backlog's jobs started before the second key's, "
            f"more than two windows ({2 * fair.window})"
        )
    if results.recovery_s > RECOVERY_LIMIT_S:
        found.append(f"recovery took {results.recovery_s:.1f} s, over {RECOVERY_LIMIT_S:.0f} s")
    return found


def database_name(url: str) -> str:
    """``sqlite`` or ``postgresql`` (the URL's backend), for the result line."""
    return make_url(url).get_backend_name()


def fresh_copies(template: Mapping[str, Any], n: int, start: datetime) -> list[dict[str, Any]]:
    """``n`` queued copies of a finished job's row, new ids, created 1 µs apart from ``start``."""
    return [
        {**template, **FRESH_JOB, "id": new_job_id(), "created_at": start + timedelta(0, 0, i)}
        for i in range(n)
    ]


def queued_rows(owners: Sequence[str], n: int, start: datetime) -> list[dict[str, Any]]:
    """``n`` queued jobs spread round-robin over ``owners`` (step 1: never run, only
    dispatched), created 1 µs apart from ``start``."""
    return [_queued_row(owners[i % len(owners)], start + timedelta(0, 0, i)) for i in range(n)]


def _queued_row(owner: str, created: datetime) -> dict[str, Any]:
    row = {
        "id": new_job_id(), "owner_id": owner, "model": MODEL, "status": "queued",
        "messages": [], "images": [], "params": {"max_tokens": 1}, "price": {}, "metadata": {},
        "timeout_seconds": 600, "attempts": 0, "created_at": created, "priority": "normal",
    }  # fmt: skip
    return row


# --------------------------------------------------------------------------- the stack


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (returned); BenchError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)
    return value


def backing(stack: ExitStack, workdir: Path, database_url: str | None) -> dict[str, str]:
    """Redis, SeaweedFS, the model and the migrated database; the parts' LOUPE_* settings."""
    broker = start_redis(workdir / "redis", log_path=workdir / "logs" / "redis.log")
    stack.callback(broker.stop)
    access, secret = random_credentials()
    s3 = start_seaweed(
        workdir / "seaweed", bucket=BUCKET, access_key_id=access, secret_access_key=secret,
        log_path=workdir / "logs" / "seaweed.log",
    )  # fmt: skip
    stack.callback(s3.stop)
    _say(f"redis at {broker.url}, seaweed at {s3.endpoint_url}; building the tiny model")
    build_local_models(workdir / "models", ["tiny-mllama"])
    url = database_url or f"sqlite:///{workdir / 'loupe.db'}"
    upgrade_to_head(url)
    return {
        "LOUPE_DATABASE_URL": url, "LOUPE_BROKER_URL": broker.url,
        "LOUPE_S3_ENDPOINT_URL": s3.endpoint_url, "LOUPE_S3_BUCKET": BUCKET,
        "LOUPE_S3_ACCESS_KEY_ID": access, "LOUPE_S3_SECRET_ACCESS_KEY": secret,
        "LOUPE_MODELS_DIR": str(workdir / "models"), **BENCH_ENV,
    }  # fmt: skip


def _count(engine: Engine, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one())


def require_idle_database(engine: Engine) -> None:
    """BenchError if the database holds queued or running jobs: they would be dispatched too."""
    live = _count(engine, jobs.c.status.in_(LIVE))
    if live:
        raise BenchError(f"the database holds {live} queued or running jobs; give it an empty one")


def _new_key(engine: Engine, name: str) -> tuple[str, str]:
    """A user key: (its id, its plaintext)."""
    key, plaintext = SqlKeyStore(engine).create(name, Role.USER, datetime.now(UTC))
    return key.id, plaintext


# --------------------------------------------------------------------------- step 1


def measure_throughput(settings: Settings, engine: Engine, n: int, keys: int) -> Throughput:
    """Step 1; leaves neither jobs nor messages behind."""
    owners = [_new_key(engine, f"bench-rate-{i}")[0] for i in range(keys)]
    rows = queued_rows(owners, n, datetime.now(UTC))
    with engine.begin() as conn:
        for start in range(0, n, 5000):
            conn.execute(insert(jobs), rows[start : start + 5000])
    client = redis.Redis.from_url(settings.broker_url)
    try:
        _fake_worker(client, settings.inference_queue)
        with ExitStack() as stack:
            passes, seconds = _drain(build_dispatcher(settings, stack), engine, n)
        _check_messages(client, settings.inference_queue, n)
        client.flushdb()  # the messages and the fake heartbeat
    finally:
        client.close()
    with engine.begin() as conn:
        conn.execute(delete(jobs).where(jobs.c.owner_id.in_(owners)))
    return Throughput(n, keys, passes, seconds)


def _fake_worker(client: redis.Redis, queue: str) -> None:
    now = datetime.now(UTC)
    info = WorkerInfo("bench-fake", 1, (queue,), "none", MODEL, FAKE_SLOTS, 0, now, now)
    RedisHeartbeats(client).beat(info, ttl_seconds=600)


def _drain(dispatcher: Dispatcher, engine: Engine, n: int) -> tuple[int, float]:
    """Dispatch passes until ``n`` jobs went out; (passes, seconds inside ``dispatch()``)."""
    handed = passes = 0
    seconds = 0.0
    while handed < n:
        started = time.perf_counter()
        got = dispatcher.dispatch()
        seconds += time.perf_counter() - started
        if got == 0:
            raise BenchError(f"a dispatch pass handed out nothing after {handed} of {n} jobs")
        handed, passes = handed + got, passes + 1
        _finish_dispatched(engine)
    return passes, seconds


def _finish_dispatched(engine: Engine) -> None:
    """Mark every handed-out job canceled: out of flight, so the window is free again."""
    with engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.status == "queued", jobs.c.dispatched_at.is_not(None))
            .values(status="canceled", completed_at=datetime.now(UTC), dispatched_at=None)
        )


def _check_messages(client: redis.Redis, queue: str, n: int) -> None:
    held = sum(int(client.llen(name)) for name in priority_queue_names(queue).values())
    if held != n:
        raise BenchError(f"the broker holds {held} messages after dispatching {n} jobs")


# --------------------------------------------------------------------------- steps 2-4


class Bench:
    """The running stack: its settings, the in-process API, the dispatcher and workers."""

    def __init__(self, env: dict[str, str], engine: Engine, api: ApiRoot, logs: Path) -> None:
        self.env = env
        self.engine = engine
        self.client = create_app(api).test_client()
        self.logs = logs
        self.image = sample_png()
        self.processes: dict[str, ServerProcess] = {}

    def start(self, stack: ExitStack, parts: Sequence[Part]) -> None:
        """Start ``parts`` side by side, all ready when this returns; each stops with
        ``stack``. Their logs: ``<part name>.log``."""
        _say(f"starting {', '.join(part.name for part in parts)}")
        pairs = [(part, self.logs / f"{part.name}.log") for part in parts]
        env = process_env(self.env, inherit_loupe=False)
        started = start_parts(pairs, env, timeout=READY_TIMEOUT_S)
        for part, process in zip(parts, started, strict=True):
            stack.callback(process.stop)
            self.processes[part.name] = process

    def worker(self, name: str) -> Part:
        """An inference worker named ``name`` (one of :data:`WORKERS`)."""
        part = inference_worker_part(self.env, node=name)
        return Part(name, part.argv, part.ready)

    def key(self, name: str) -> tuple[str, str]:
        return _new_key(self.engine, name)

    def submit(self, key: str, max_tokens: int) -> str:
        """POST one job (the sample image, ``max_tokens`` tokens exactly); its id."""
        body = job_body(self.image, MODEL, max_tokens)
        response = self.client.post("/v1/jobs", json=body, headers=_auth(key))
        if response.status_code != 202:
            raise BenchError(f"POST /v1/jobs answered {response.status_code}: {response.json}")
        job: dict[str, Any] = response.json or {}
        return str(job["id"])

    def row(self, job_id: str) -> Mapping[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())

    def finished(self, job_id: str) -> Mapping[str, Any]:
        """The job's row once it is terminal; BenchError unless it succeeded."""
        row: Mapping[str, Any] = _wait(
            lambda: _terminal(self.row(job_id)), STEP_TIMEOUT_S, f"job {job_id}"
        )
        if row["status"] != "succeeded":
            raise BenchError(f"job {job_id} ended {row['status']}: {row['error_message']}")
        return row

    def count(self, *where: Any) -> int:
        return _count(self.engine, *where)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _terminal(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return row if row["status"] in TERMINAL else None


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def measure_idle(bench: Bench, rounds: int) -> list[float]:
    """Step 2: milliseconds from commit to claim, one job at a time."""
    key = bench.key("bench-idle")[1]
    overheads = []
    for n in range(IDLE_WARMUP + rounds):
        row = bench.finished(bench.submit(key, 1))
        if n >= IDLE_WARMUP:
            overheads.append(_seconds(row["started_at"], row["created_at"]) * 1000)
    return overheads


def measure_fairness(bench: Bench, backlog: int) -> Fairness:
    """Step 3; leaves the workers idle."""
    owner_a, key_a = bench.key("bench-a")
    key_b = bench.key("bench-b")[1]
    template = bench.finished(bench.submit(key_a, FAIR_TOKENS))
    _say(f"key A: {backlog} jobs straight into SQL")
    copies = fresh_copies(template, backlog, datetime.now(UTC))
    with bench.engine.begin() as conn:
        conn.execute(insert(jobs), copies)
    _nudge(bench)
    window = WORKER_SLOTS + load_settings(bench.env).dispatch_margin
    of_a = (jobs.c.owner_id == owner_a, jobs.c.id != template["id"])
    _wait(lambda: bench.count(*of_a, jobs.c.started_at.is_not(None)) >= 2 * window,
          STEP_TIMEOUT_S, "the backlog to get going")  # fmt: skip
    _say("key B: one job through the API")
    b = bench.row(bench.submit(key_b, FAIR_TOKENS))
    started = _wait(lambda: bench.row(b["id"])["started_at"], STEP_TIMEOUT_S, "B's job to start")
    fairness = _fairness(bench, of_a, b["created_at"], started, backlog, window)
    _drop_backlog(bench, owner_a)
    return fairness


def _nudge(bench: Bench) -> None:
    with closing(RedisDispatchNudge.from_url(bench.env["LOUPE_BROKER_URL"])) as nudge:
        nudge.nudge(load_settings(bench.env).inference_queue)


def _fairness(
    bench: Bench,
    of_a: tuple[Any, ...],
    submitted: datetime,
    started: datetime,
    backlog: int,
    window: int,
) -> Fairness:
    """Step 3's numbers from the start times of A's jobs around B's ``submitted``/``started``."""
    at = jobs.c.started_at
    ahead = bench.count(*of_a, at >= submitted, at < started)
    before = bench.count(*of_a, at < submitted)
    with bench.engine.connect() as conn:
        first = conn.execute(select(func.min(at)).where(*of_a)).scalar_one()
    rate = bench.count(*of_a, at <= started) / _seconds(started, first)
    wait = _seconds(started, submitted)
    return Fairness(backlog, wait, ahead, backlog - before, rate, window)


def _drop_backlog(bench: Bench, owner: str) -> None:
    """Cancel A's queued jobs in bulk and wait until nothing is queued or running."""
    now = datetime.now(UTC)
    with bench.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.owner_id == owner, jobs.c.status == "queued")
            .values(status="canceled", completed_at=now, error_code="canceled", dispatched_at=None)
        )
    _wait(lambda: bench.count(jobs.c.status.in_(LIVE)) == 0, STEP_TIMEOUT_S, "idle workers")


def measure_recovery(bench: Bench, stack: ExitStack) -> float:
    """Step 4: seconds from SIGKILL of the worker running a long job to its second attempt."""
    bench.start(stack, [bench.worker(WORKERS[1])])
    key = bench.key("bench-crash")[1]
    job_id = bench.submit(key, LONG_TOKENS)
    _wait(lambda: bench.row(job_id)["status"] == "running", STEP_TIMEOUT_S, "the long job to run")
    victim = _wait(lambda: _running_on(bench.processes, job_id), 10, "a worker naming the job")
    _say(f"kill -9 {victim.log_path.stem} (pid {victim.pid}) mid-job")
    victim.kill()
    killed = time.monotonic()
    _wait(lambda: _rerunning(bench.row(job_id)), 120, "the job to run again")
    recovery = time.monotonic() - killed
    bench.client.post(f"/v1/jobs/{job_id}/cancel", headers=_auth(key))
    _wait(lambda: _terminal(bench.row(job_id)), 60, "the canceled job to end")
    return recovery


def _running_on(processes: Mapping[str, ServerProcess], job_id: str) -> ServerProcess | None:
    """The worker whose log names ``job_id`` (Celery logs each task it receives)."""
    workers = (processes[name] for name in WORKERS if name in processes)
    return next((worker for worker in workers if job_id in worker.log_text()), None)


def _rerunning(row: Mapping[str, Any]) -> bool:
    return row["attempts"] >= 2 and row["status"] in ("running", "succeeded")


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace, workdir: Path) -> Results:
    """Every step in order; the measurements."""
    with ExitStack() as stack:
        env = backing(stack, workdir, args.database_url)
        settings = load_settings(env)
        engine = make_engine(settings.database_url)
        stack.callback(engine.dispose)
        require_idle_database(engine)
        _say(f"step 1: dispatching {args.jobs} jobs of {args.keys} keys, no engine work")
        throughput = measure_throughput(settings, engine, args.jobs, args.keys)
        api = build_api(settings, engine=engine)
        stack.callback(api.close)
        bench = Bench(env, engine, api, workdir / "logs")
        bench.start(stack, [dispatcher_part(env), bench.worker(WORKERS[0])])
        _say(f"step 2: {args.idle_rounds} jobs one at a time")
        idle = measure_idle(bench, args.idle_rounds)
        _say(f"step 3: one job behind another key's {args.backlog}")
        fairness = measure_fairness(bench, args.backlog)
        _say("step 4: kill -9 of a worker mid-job")
        recovery = measure_recovery(bench, stack)
        _say("stopping everything")
    return Results(database_name(settings.database_url), idle, throughput, fairness, recovery)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bench.dispatch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--idle-rounds", type=_positive, default=30, help="step 2's jobs")
    parser.add_argument("--jobs", type=_positive, default=5000, help="step 1's jobs")
    parser.add_argument("--keys", type=_positive, default=10, help="step 1's keys")
    parser.add_argument("--backlog", type=_positive, default=1000, help="step 3's backlog")
    parser.add_argument(
        "--database-url", default=None, help="an empty database (default: SQLite in the workdir)"
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="state and logs (default: a temp dir)"
    )
    return parser


def _emit(line: str, json_out: Path | None) -> None:
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(line + "\n")
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; the result JSON is the last stdout line. Exit 0 or 1."""
    args = _parser().parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="loupe-bench-dispatch-"))).resolve()
    ok = False
    try:
        with _sigterm_as_exit():
            results = run(args, workdir)
        ok = True
    except (BenchError, ServerStartError, LoupeError) as exc:
        print(f"bench-dispatch failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench-dispatch interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        _clean(workdir, ok, keep=args.workdir is not None)
    result = summary(results)
    print(format_table(result))
    _emit(json.dumps(result), args.json_out)
    failed = problems(results)
    for problem in failed:
        print(f"bench-dispatch check failed: {problem}", file=sys.stderr)
    return 1 if failed else 0


def _clean(workdir: Path, ok: bool, keep: bool) -> None:
    if not ok:
        print(f"bench-dispatch: logs kept in {workdir / 'logs'}", file=sys.stderr)
    elif not keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
