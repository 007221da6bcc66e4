"""Front-door benchmark: submit and poll under load, beside a bare Flask app on the same flags.

``python -m infra.bench.api [--seconds 10] [--rounds 3] [--connections 16] [--backlog 100000]
[--database-url URL] [--require-targets] [--json-out PATH] [--workdir DIR]``

The stack starts as ``make up`` starts it (:func:`infra.localstack.stack.bring_up`: a private
Redis, SeaweedFS, the database migrated by ``services.cli migrate``, a user key made by
``services.cli create-key``), all on 127.0.0.1 and free ports, with three app parts:

- ``api``: the stack's own part (:func:`~infra.localstack.parts.api_part`): gunicorn with
  ``infra/gunicorn_conf.py``, 2 processes x ``LOUPE_API_THREADS`` (16) gthread threads. It is
  addressed directly, not through nginx: the proxy's cost would be the same for both apps.
- ``dispatcher``: as in ``make up``, because it is part of the submit path in production: a
  submit nudges it (one Redis ``PUBLISH``) and queue positions come from its backlog snapshot in
  Redis. Without it a position falls back to a COUNT over the backlog, which production never
  does. With no worker it hands out only its margin (4 jobs), then refreshes the snapshot about
  once a second; it shares the machine's CPUs with the API, as it would on one host.
- ``bare``: :mod:`infra.bench.bare_app` under the api part's very command line, only the app
  and the port swapped.

No inference worker runs: only the front door is measured, and every job stays queued.

``wrk`` (Debian's package; ``make bench-api`` installs it) drives each endpoint at
``--connections`` connections (2 threads, a 10 s request timeout), from a generated Lua script
that sets the method, the ``Authorization`` header and the body:

1. Setup: one job submitted and marked succeeded in SQL (what ``poll`` reads), then
   ``LOUPE_DISPATCH_MARGIN`` jobs that fill the dispatcher's window, then one that therefore
   waits in SQL (what ``poll queued`` reads). Every submit sends the same multipart form: a
   ~200 KB PNG of noise as ``image``, a ``prompt``, ``model`` (the catalog's default) and
   ``max_tokens``.
2. Each endpoint is warmed for 2 s (not counted). Then ``--rounds`` rounds drive, in turn, for
   ``--seconds`` each: ``submit`` (``POST /v1/jobs``, that form), ``upload`` (the bare app's
   ``POST /upload``, the same bytes), ``poll`` (``GET /v1/jobs/{id}`` of the succeeded job) and
   ``row`` (the bare app's ``GET /rows/{id}``: that job's row). Alternating keeps the machine's
   drift out of the ratios; each figure reported is the median over the rounds.
3. ``poll queued`` (``GET /v1/jobs/{id}`` of the queued job: position and ETA), once.
4. Round trips per request, in this process: the real app (``build_api`` + ``create_app``'s test
   client) on the same database, Redis and S3, with SQL statements and commits (SQLAlchemy
   events; a pool's pre-ping is not a statement), Redis commands (a pipeline counts once) and
   S3 calls (counting wrappers on redis-py's and botocore's client classes, for those requests
   only) over 10 submits, 10 polls and 10 polls of the queued job, after 3 of each not counted.
5. ``--backlog`` queued jobs of the same key go straight into SQL (copies of the queued job's
   row created an hour earlier, one ``executemany``; PostgreSQL then runs ``ANALYZE jobs``, as
   autovacuum would within a minute), so the ``poll queued`` job has all of them ahead of it.
   Once the dispatcher's snapshot shows them, ``submit`` and ``poll queued`` run once more.
6. Prints a table, then, as the LAST stdout line, one JSON object: ``bench, db, submit_rps,
   bare_upload_rps, ratio_submit, poll_rps, bare_row_rps, ratio_poll, submit_p50_ms,
   submit_p50_ms_at_100k`` (at ``--backlog`` queued jobs, whatever its value), then
   ``poll_p50_ms, bare_upload_p50_ms, bare_row_p50_ms, poll_queued_rps, poll_queued_p50_ms,
   poll_queued_p50_ms_at_100k, submit_rps_at_100k, backlog, rounds, seconds, connections,
   round_trips, loadavg``; the same object goes to ``--json-out`` when given. Progress goes to
   stderr.

Checks: no answer outside 2xx and no socket error or timeout in any run; the submits created
as many jobs as wrk counted answers (plus at most one per connection per run, cut off in
flight when wrk stopped). The issue's targets (``ratio_submit`` and ``ratio_poll`` >= 0.5,
``submit_p50_ms_at_100k`` <= 1.5 x ``submit_p50_ms``) are printed as met or not; with
``--require-targets`` one unmet fails the run too. A failed check is named on stderr after
the table and the JSON line.

With ``--database-url`` (a migrated or empty database holding no queued or running job) the
bench key's jobs are deleted at the end, so no later dispatcher runs them. Everything started
is stopped on every exit path; the work directory (logs in ``stack/logs/``) is removed after a
successful run unless ``--workdir`` names it, and kept, with its path printed, after a failure.

Exit codes: 0 success; 1 a part did not start, a step failed, or a check failed; 130
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.client
import redis
import requests
from PIL import Image
from sqlalchemy import Engine, delete, event, func, insert, select, text, update

from infra.bench.batching import _sigterm_as_exit
from infra.bench.dispatch import (
    BenchError,
    database_name,
    fresh_copies,
    require_idle_database,
)
from infra.localstack.parts import (
    READY_TIMEOUT_S,
    Part,
    api_part,
    dispatcher_part,
)
from infra.localstack.servers import LOOPBACK, ServerStartError, free_port
from infra.localstack.stack import StackError, StackPaths, StackPlan, bring_up, launched
from services.api.app import create_app
from services.api.root import build_api
from services.catalog.registry import build_registry
from services.db import make_engine, normalize_url
from services.db.schema import jobs
from services.errors import LoupeError
from services.jobs.backlog import RedisBacklogBoard
from services.jobs.handoff import RedisDispatchNudge
from services.settings import Settings, load_settings

API_APP = "services.api.wsgi:app"
BARE_APP = "infra.bench.bare_app:create_app()"
KEY_VARIABLE = "BENCH_API_KEY"
WRK_THREADS = 2
WRK_TIMEOUT = "10s"
WARMUP_S = 2
ROUND_TRIP_REQUESTS = 10
ROUND_TRIP_WARMUP = 3
IMAGE_SIDE = 256
"""A square of RGB noise: a PNG of ~200 KB (noise does not compress), as in the issue."""
MAX_TOKENS = 16
SNAPSHOT_TIMEOUT_S = 60.0
SETTLE_S = 2.0
"""After the last submit run: requests cut off in flight by wrk's stop may still commit."""
TARGET_RATIO = 0.5
TARGET_DEPTH_FACTOR = 1.5
ENDPOINTS = ("submit", "upload", "poll", "row")
"""The endpoints of each round, in the order they run."""
LABELS = {
    "submit": "POST /v1/jobs (multipart, ~200 KB PNG)",
    "upload": "bare POST /upload (Pillow verify)",
    "poll": "GET /v1/jobs/{id} (succeeded job)",
    "row": "bare GET /rows/{id} (one SQL row)",
    "poll_queued": "GET /v1/jobs/{id} (queued job)",
}
WRK_MARK = "BENCH_WRK "
"""The prefix of the line the Lua ``done`` hook prints: then one JSON object."""
_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "%s{\\"requests\\": %.0f, \\"duration_us\\": %.0f, \\"connect\\": %.0f, \\"read\\": %.0f, "
    .. "\\"write\\": %.0f, \\"status\\": %.0f, \\"timeout\\": %.0f, \\"p50_us\\": %.0f, "
    .. "\\"p90_us\\": %.0f, \\"p99_us\\": %.0f, \\"max_us\\": %.0f}\\n",
    MARK, summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class Target:
    """One endpoint as wrk drives it: every request the same."""

    name: str
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Path | None = None  # a file holding the request body


@dataclass(frozen=True)
class Load:
    """One wrk run: ``requests`` answered in ``seconds``, latency percentiles in ms, errors
    (``socket_errors``: connect, read, write and timeouts; ``bad_status``: outside 2xx/3xx)."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int = 0
    bad_status: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def answered(self) -> int:
        """Answers in 2xx/3xx."""
        return self.requests - self.bad_status


def lua_string(value: str) -> str:
    """``value`` as a double-quoted Lua string literal (any byte outside printable ASCII, a
    quote or a backslash as a decimal escape)."""
    escaped = "".join(
        char if " " <= char <= "~" and char not in '"\\' else f"\\{byte:03d}"
        for char in value
        for byte in char.encode()
    )
    return f'"{escaped}"'


def wrk_script(target: Target) -> str:
    """The Lua script wrk runs for ``target``: method, headers, body (read from its file once,
    at start) and a ``done`` hook printing :data:`WRK_MARK` and the run's numbers as JSON."""
    lines = [f"wrk.method = {lua_string(target.method)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in target.headers.items()]
    if target.body is not None:
        lines += [
            f"local file = assert(io.open({lua_string(str(target.body))}, 'rb'))",
            "wrk.body = file:read('*a')",
            "file:close()",
        ]
    lines.append(f"MARK = {lua_string(WRK_MARK)}")
    return "\n".join(lines) + "\n" + _DONE


def parse_wrk(output: str) -> Load:
    """The :class:`Load` in wrk's output (the ``done`` hook's line); BenchError without one."""
    line = next((line for line in output.splitlines() if line.startswith(WRK_MARK)), None)
    if line is None:
        raise BenchError(f"wrk printed no result line:\n{output[-2000:]}")
    data = json.loads(line.removeprefix(WRK_MARK))
    return Load(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        socket_errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
        bad_status=int(data["status"]),
    )


def find_wrk() -> Path:
    """``wrk`` from PATH (or /usr/bin); BenchError saying how to install it otherwise."""
    found = shutil.which("wrk") or shutil.which("wrk", path="/usr/bin")
    if found is None:
        raise BenchError("no `wrk`: apt-get install -y wrk (make bench-api does, as root)")
    return Path(found)


class Driver:
    """Runs wrk against targets at ``connections`` connections; scripts go to ``scripts``."""

    def __init__(self, wrk: Path, scripts: Path, connections: int) -> None:
        self.wrk = wrk
        self.scripts = scripts
        self.connections = connections
        scripts.mkdir(parents=True, exist_ok=True)

    def drive(self, target: Target, seconds: int) -> Load:
        """``target`` for ``seconds``; the run's :class:`Load`."""
        script = self.scripts / f"{target.name}.lua"
        script.write_text(wrk_script(target))
        argv = [
            str(self.wrk), "-t", str(min(WRK_THREADS, self.connections)),
            "-c", str(self.connections), "-d", f"{seconds}s", "--timeout", WRK_TIMEOUT,
            "-s", str(script), target.url,
        ]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"wrk exited {done.returncode}: {done.stderr[-2000:]}")
        return parse_wrk(done.stdout)


# --------------------------------------------------------------------------- the request body


def noise_png(side: int = IMAGE_SIDE, seed: int = 13) -> bytes:
    """A ``side`` x ``side`` RGB PNG of seeded noise: ~3 bytes a pixel, as noise does not
    compress."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart_form(
    fields: Mapping[str, str], image: bytes, boundary: str = "loupe-bench-api-boundary"
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with ``fields`` and ``image`` as the file ``image``
    (``bench.png``, ``image/png``); (body, its Content-Type)."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="bench.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RoundTrips:
    """Per request, averaged: SQL statements and commits, Redis commands (a pipeline is one),
    S3 calls."""

    sql: float
    commits: float
    redis: float
    s3: float


@dataclass(frozen=True)
class Results:
    database: str
    rounds: Mapping[str, Sequence[Load]]  # endpoint -> one Load per round
    queued: Load  # poll queued, before the backlog
    deep: Mapping[str, Load]  # submit and poll_queued at the backlog
    backlog: int
    seconds: int
    connections: int
    submits: tuple[int, int]  # (answers wrk counted, jobs created) over every submit run
    submit_runs: int
    round_trips: Mapping[str, RoundTrips] = field(default_factory=dict)
    loadavg: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start and end


def median_of(loads: Sequence[Load], measure: Callable[[Load], float]) -> float:
    """The median of ``measure`` over ``loads`` (rounds)."""
    return statistics.median(measure(load) for load in loads)


def _rps(loads: Sequence[Load]) -> float:
    return median_of(loads, lambda load: load.rps)


def _p50(loads: Sequence[Load]) -> float:
    return median_of(loads, lambda load: load.p50_ms)


def summary(results: Results) -> dict[str, Any]:
    """The result line's object (see the module docstring)."""
    r, deep = results.rounds, results.deep
    submit, upload = _rps(r["submit"]), _rps(r["upload"])
    poll, row = _rps(r["poll"]), _rps(r["row"])
    return {
        "bench": "api", "db": results.database,
        "submit_rps": round(submit, 1), "bare_upload_rps": round(upload, 1),
        "ratio_submit": round(submit / upload, 3),
        "poll_rps": round(poll, 1), "bare_row_rps": round(row, 1),
        "ratio_poll": round(poll / row, 3),
        "submit_p50_ms": round(_p50(r["submit"]), 1),
        "submit_p50_ms_at_100k": round(deep["submit"].p50_ms, 1),
        "poll_p50_ms": round(_p50(r["poll"]), 1),
        "bare_upload_p50_ms": round(_p50(r["upload"]), 1),
        "bare_row_p50_ms": round(_p50(r["row"]), 1),
        "poll_queued_rps": round(results.queued.rps, 1),
        "poll_queued_p50_ms": round(results.queued.p50_ms, 1),
        "poll_queued_p50_ms_at_100k": round(deep["poll_queued"].p50_ms, 1),
        "submit_rps_at_100k": round(deep["submit"].rps, 1),
        "backlog": results.backlog, "rounds": len(r["submit"]), "seconds": results.seconds,
        "connections": results.connections,
        "round_trips": {name: vars(trips) for name, trips in results.round_trips.items()},
        "loadavg": list(results.loadavg),
    }  # fmt: skip


def targets(result: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The issue's acceptance lines, each with whether ``result`` (:func:`summary`) meets it."""
    depth_limit = TARGET_DEPTH_FACTOR * result["submit_p50_ms"]
    return [
        (f"ratio_submit {result['ratio_submit']} >= {TARGET_RATIO}",
         result["ratio_submit"] >= TARGET_RATIO),
        (f"ratio_poll {result['ratio_poll']} >= {TARGET_RATIO}",
         result["ratio_poll"] >= TARGET_RATIO),
        (f"submit_p50_ms_at_100k {result['submit_p50_ms_at_100k']} <= {TARGET_DEPTH_FACTOR} x "
         f"{result['submit_p50_ms']} = {depth_limit:.1f}",
         result["submit_p50_ms_at_100k"] <= depth_limit),
    ]  # fmt: skip


def format_table(results: Results) -> str:
    """The table printed before the JSON line: req/s per round, medians, the ratios and
    targets, the backlog's effect and the round trips."""
    result = summary(results)
    lines = [f"{'endpoint':<42}{'req/s per round':>24}{'median':>9}{'p50 ms':>9}{'p99 ms':>9}"]
    for name in ENDPOINTS:
        loads = results.rounds[name]
        per_round = " / ".join(f"{load.rps:.1f}" for load in loads)
        p99 = median_of(loads, lambda load: load.p99_ms)
        lines.append(f"{LABELS[name]:<42}{per_round:>24}{_rps(loads):>9.1f}"
                     f"{_p50(loads):>9.1f}{p99:>9.1f}")  # fmt: skip
    lines.append(_once_row(LABELS["poll_queued"], results.queued))
    lines.append(f"at {results.backlog:,} queued jobs of the same key:")
    lines += [_once_row(f"  {LABELS[name]}", results.deep[name]) for name in ("submit",
              "poll_queued")]  # fmt: skip
    lines.append(f"ratio submit/upload {result['ratio_submit']}, poll/row {result['ratio_poll']}")
    lines += [f"  target {line}: {'met' if ok else 'NOT met'}" for line, ok in targets(result)]
    lines += _round_trip_lines(results.round_trips)
    return "\n".join(lines)


def _once_row(label: str, load: Load) -> str:
    return f"{label:<42}{'(once)':>24}{load.rps:>9.1f}{load.p50_ms:>9.1f}{load.p99_ms:>9.1f}"


def _round_trip_lines(trips: Mapping[str, RoundTrips]) -> list[str]:
    if not trips:
        return []
    lines = ["round trips per request (in-process): SQL statements (commits), Redis, S3"]
    lines += [
        f"  {name:<12} sql {t.sql:g} ({t.commits:g})  redis {t.redis:g}  s3 {t.s3:g}"
        for name, t in trips.items()
    ]
    return lines


def problems(results: Results, *, require_targets: bool = False) -> list[str]:
    """The checks that failed (empty when every one passed); see the module docstring."""
    runs = [*((name, load) for name, loads in results.rounds.items() for load in loads),
            ("poll_queued", results.queued), *results.deep.items()]  # fmt: skip
    found = [
        f"{name}: {load.bad_status} answers outside 2xx, {load.socket_errors} socket errors"
        for name, load in runs
        if load.bad_status or load.socket_errors
    ]
    answered, created = results.submits
    slack = results.connections * results.submit_runs
    if not answered <= created <= answered + slack:
        found.append(f"submits: wrk counted {answered} answers but {created} jobs were created")
    if require_targets:
        found += [f"target not met: {line}" for line, ok in targets(summary(results)) if not ok]
    return found


# --------------------------------------------------------------------------- the stack


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def bare_part(env: Mapping[str, str], *, port: int | None = None) -> Part:
    """The bare app under the api part's own command line, on ``port`` (free if None): the same
    gunicorn flags by construction."""
    api = api_part(env, port=port)
    argv = tuple(BARE_APP if arg == API_APP else arg for arg in api.argv)
    return Part("bare", argv, api.ready, api.url)


def bench_plan(database_url: str, bare_port: int) -> StackPlan:
    """The dev stack's sequence on ``database_url`` with one user key and these app parts: the
    API and the dispatcher as ``make up`` starts them, the bare app on ``bare_port``; no
    worker."""
    overrides = {
        "LOUPE_DATABASE_URL": database_url,
        "BENCH_BARE_DATABASE_URL": normalize_url(database_url),
        # One key submits thousands a minute here: a limit far above that keeps the rate check
        # (and its headers) on the path without refusing the load.
        "LOUPE_DEFAULT_REQUESTS_PER_MINUTE": "100000000",
    }

    def parts(_paths: StackPaths, env: Mapping[str, str]) -> list[Part]:
        return [api_part(env), dispatcher_part(env), bare_part(env, port=bare_port)]

    return StackPlan(
        app_parts=parts, keys={KEY_VARIABLE: ("bench-api", "user")}, overrides=overrides
    )


@dataclass
class Bench:
    """The running stack as the bench uses it."""

    settings: Settings
    engine: Engine
    key: str
    api: str  # the API's own URL (gunicorn)
    bare: str  # the bare app's URL
    form: Path  # the multipart body every submit sends
    content_type: str
    owner: str = ""  # the key's id, from the first job it submits

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def submit(self) -> str:
        """One submit over HTTP; the job's id (and the key's id remembered)."""
        response = requests.post(
            f"{self.api}/v1/jobs", data=self.form.read_bytes(), timeout=30,
            headers={**self.auth(), "Content-Type": self.content_type},
        )  # fmt: skip
        if response.status_code != 202:
            raise BenchError(f"POST /v1/jobs answered {response.status_code}: {response.text}")
        job_id = str(response.json()["id"])
        self.owner = self.owner or self.row(job_id)["owner_id"]
        return job_id

    def row(self, job_id: str) -> Mapping[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())

    def count(self) -> int:
        """The key's jobs in SQL."""
        query = select(func.count()).select_from(jobs).where(jobs.c.owner_id == self.owner)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def targets(self, finished: str, queued: str) -> dict[str, Target]:
        """Every endpoint the bench drives, by name."""
        post = {**self.auth(), "Content-Type": self.content_type}
        return {
            "submit": Target("submit", f"{self.api}/v1/jobs", "POST", post, self.form),
            "upload": Target("upload", f"{self.bare}/upload", "POST", post, self.form),
            "poll": Target("poll", f"{self.api}/v1/jobs/{finished}", headers=self.auth()),
            "row": Target("row", f"{self.bare}/rows/{finished}"),
            "poll_queued": Target(
                "poll_queued", f"{self.api}/v1/jobs/{queued}", headers=self.auth()
            ),
        }


def finish(engine: Engine, job_id: str) -> None:
    """Mark a queued job succeeded, with output and usage, as a worker would leave it."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(
                status="succeeded", attempts=1, started_at=now - timedelta(seconds=2),
                completed_at=now, dispatched_at=None, queued_at=None, lease_expires_at=None,
                output_text="A small house under a clear sky, a tree beside it. " * 4,
                finish_reason="length", prompt_tokens=1617, completion_tokens=MAX_TOKENS,
            )
        )  # fmt: skip


# --------------------------------------------------------------------------- measuring


def measure_rounds(
    driver: Driver, targets: Mapping[str, Target], rounds: int, seconds: int
) -> tuple[dict[str, list[Load]], Load]:
    """Warm every endpoint up, then ``rounds`` rounds of :data:`ENDPOINTS` in turn; the rounds'
    loads per endpoint, and the submit warm-up's (its jobs count too)."""
    warmups = {name: driver.drive(targets[name], WARMUP_S) for name in (*ENDPOINTS, "poll_queued")}
    loads: dict[str, list[Load]] = {name: [] for name in ENDPOINTS}
    for number in range(1, rounds + 1):
        _say(f"round {number} of {rounds}")
        for name in ENDPOINTS:
            loads[name].append(driver.drive(targets[name], seconds))
    return loads, warmups["submit"]


class Counts:
    """Round trips seen while :meth:`counting`: SQL statements and commits on ``engine``, Redis
    commands (pipelines once) and S3 calls of every client in this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: Counter[str] = Counter()

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        with ExitStack() as stack:
            for name, hook in (("before_cursor_execute", "sql"), ("commit", "commits")):
                listener = self._counter(hook)
                event.listen(self.engine, name, listener)
                stack.callback(event.remove, self.engine, name, listener)
            stack.enter_context(_wrapped(redis.Redis, "execute_command", self._counter("redis")))
            stack.enter_context(_wrapped(redis.client.Pipeline, "execute", self._counter("redis")))
            stack.enter_context(
                _wrapped(botocore.client.BaseClient, "_make_api_call", self._counter("s3"))
            )
            yield

    def _counter(self, name: str) -> Callable[..., None]:
        def count(*_args: Any, **_kwargs: Any) -> None:
            self.seen[name] += 1

        return count


@contextlib.contextmanager
def _wrapped(owner: type, name: str, before: Callable[..., None]) -> Iterator[None]:
    """``owner.name`` calls ``before`` first, inside the block (the class restored after)."""
    original = owner.__dict__[name]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def measure_round_trips(bench: Bench, finished: str, queued: str) -> dict[str, RoundTrips]:
    """Round trips per submit, poll and poll of the queued job, through the real app in this
    process (see the module docstring, step 4)."""
    root = build_api(bench.settings, engine=bench.engine)
    try:
        client = create_app(root).test_client()
        body = bench.form.read_bytes()
        requests_by_name: dict[str, Callable[[], Any]] = {
            "submit": lambda: client.post("/v1/jobs", data=body, headers=bench.auth(),
                                          content_type=bench.content_type),
            "poll": lambda: client.get(f"/v1/jobs/{finished}", headers=bench.auth()),
            "poll_queued": lambda: client.get(f"/v1/jobs/{queued}", headers=bench.auth()),
        }  # fmt: skip
        return {name: _round_trips(bench.engine, send) for name, send in requests_by_name.items()}
    finally:
        root.close()


def _round_trips(engine: Engine, send: Callable[[], Any]) -> RoundTrips:
    for _ in range(ROUND_TRIP_WARMUP):
        _expect_2xx(send())
    counts = Counts(engine)
    with counts.counting():
        for _ in range(ROUND_TRIP_REQUESTS):
            _expect_2xx(send())
    per = {name: counts.seen[name] / ROUND_TRIP_REQUESTS for name in ("sql", "commits",
           "redis", "s3")}  # fmt: skip
    return RoundTrips(**per)


def _expect_2xx(response: Any) -> None:
    if not 200 <= response.status_code < 300:
        raise BenchError(f"in-process request answered {response.status_code}: {response.data!r}")
    response.close()


def insert_backlog(bench: Bench, template_id: str, n: int) -> None:
    """``n`` queued copies of ``template_id``'s row, created an hour ago, in one executemany.
    PostgreSQL then analyzes ``jobs``, as autovacuum would within a minute: the planner's
    statistics of a steady backlog, not those of an empty table."""
    rows = fresh_copies(bench.row(template_id), n, datetime.now(UTC) - timedelta(hours=1))
    with bench.engine.begin() as conn:
        conn.execute(insert(jobs), rows)
    if bench.engine.dialect.name == "postgresql":
        with bench.engine.begin() as conn:
            conn.execute(text("ANALYZE jobs"))


def await_snapshot(settings: Settings, at_least: int) -> None:
    """Nudge the dispatcher until its backlog snapshot holds ``at_least`` waiting jobs."""
    queue = settings.inference_queue
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
    with closing(RedisBacklogBoard.from_url(settings.broker_url)) as board, closing(
        RedisDispatchNudge.from_url(settings.broker_url)
    ) as nudge:  # fmt: skip
        while _waiting(board.read(queue)) < at_least:
            if time.monotonic() > deadline:
                raise BenchError(f"the dispatcher's snapshot never showed {at_least} jobs")
            nudge.nudge(queue)
            time.sleep(0.5)


def _waiting(backlog: Any) -> int:
    if backlog is None:
        return 0
    return sum(sum(keys.values()) for keys in backlog.waiting.values())


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace, workdir: Path) -> Results:
    """Every step in order; the measurements."""
    driver = Driver(find_wrk(), workdir / "wrk", args.connections)
    paths = StackPaths.at(workdir / "stack")
    url = args.database_url or f"sqlite:///{paths.dev / 'loupe.db'}"
    bare_port = free_port()
    load_start = os.getloadavg()[0]
    with launched(paths, say=_say) as launcher:
        values = bring_up(launcher, bench_plan(url, bare_port), READY_TIMEOUT_S)
        bench = _bench(values, workdir, f"http://{LOOPBACK}:{bare_port}")
        try:
            results = _measure(bench, driver, args)
        finally:
            if args.database_url and bench.owner:
                _delete_jobs(bench)
            bench.engine.dispose()
        _say("stopping everything")
    return replace(results, loadavg=(load_start, os.getloadavg()[0]))


def _bench(values: Mapping[str, str], workdir: Path, bare_url: str) -> Bench:
    settings = load_settings(values)
    model = build_registry(settings).default_model
    fields = {"prompt": "Describe this image.", "model": model, "max_tokens": str(MAX_TOKENS)}
    body, content_type = multipart_form(fields, noise_png())
    form = workdir / "form.bin"
    form.write_bytes(body)
    engine = make_engine(settings.database_url)
    return Bench(settings, engine, values[KEY_VARIABLE], values["LOUPE_API_DIRECT_URL"],
                 bare_url, form, content_type)  # fmt: skip


def _measure(bench: Bench, driver: Driver, args: argparse.Namespace) -> Results:
    seconds = args.seconds
    require_idle_database(bench.engine)
    finished = bench.submit()
    finish(bench.engine, finished)
    for _ in range(bench.settings.dispatch_margin):  # no worker: these fill the broker's window
        bench.submit()
    queued = bench.submit()  # so this one waits in SQL, like the backlog ahead of it later
    before = bench.count()
    targets = bench.targets(finished, queued)
    _say(f"warm-up, then {args.rounds} rounds of {seconds} s per endpoint")
    rounds, warmup = measure_rounds(driver, targets, args.rounds, seconds)
    queued_load = driver.drive(targets["poll_queued"], seconds)
    _say("round trips per request, in-process")
    trips = measure_round_trips(bench, finished, queued)
    started = time.perf_counter()
    insert_backlog(bench, queued, args.backlog)
    _say(f"{args.backlog:,} queued jobs into SQL in {time.perf_counter() - started:.1f} s")
    await_snapshot(bench.settings, args.backlog)
    deep = {name: driver.drive(targets[name], seconds) for name in ("submit", "poll_queued")}
    time.sleep(SETTLE_S)
    runs = [warmup, *rounds["submit"], deep["submit"]]
    in_process = ROUND_TRIP_WARMUP + ROUND_TRIP_REQUESTS
    created = bench.count() - before - in_process - args.backlog
    return Results(
        database=database_name(bench.settings.database_url), rounds=rounds, queued=queued_load,
        deep=deep, backlog=args.backlog, seconds=seconds, connections=args.connections,
        submits=(sum(load.answered for load in runs), created), submit_runs=len(runs),
        round_trips=trips,
    )  # fmt: skip


def _delete_jobs(bench: Bench) -> None:
    with bench.engine.begin() as conn:
        conn.execute(delete(jobs).where(jobs.c.owner_id == bench.owner))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bench.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=_positive, default=10, help="per wrk run")
    parser.add_argument("--rounds", type=_positive, default=3)
    parser.add_argument("--connections", type=_positive, default=16)
    parser.add_argument("--backlog", type=_positive, default=100_000, help="queued jobs, step 5")
    parser.add_argument(
        "--database-url", default=None, help="a database with no live job (default: SQLite)"
    )
    parser.add_argument(
        "--require-targets", action="store_true", help="an unmet target of the issue fails too"
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
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="loupe-bench-api-"))).resolve()
    ok = False
    try:
        with _sigterm_as_exit():
            results = run(args, workdir)
        ok = True
    except (BenchError, ServerStartError, StackError, LoupeError) as exc:
        print(f"bench-api failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench-api interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        _clean(workdir, ok, keep=args.workdir is not None)
    print(format_table(results))
    _emit(json.dumps(summary(results)), args.json_out)
    failed = problems(results, require_targets=args.require_targets)
    for problem in failed:
        print(f"bench-api check failed: {problem}", file=sys.stderr)
    return 1 if failed else 0


def _clean(workdir: Path, ok: bool, keep: bool) -> None:
    if not ok:
        print(f"bench-api: logs kept in {workdir / 'stack' / 'logs'}", file=sys.stderr)
    elif not keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
