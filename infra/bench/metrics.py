"""``/metrics`` latency benchmark: scrape time with a deep queue.

``python -m infra.bench.metrics [--queued 10000] [--finished 2000] [--scrapes 200]
[--cache-ms 0] [--json-out PATH] [--workdir DIR]``

1. Starts a private Redis on 127.0.0.1 (free port) and a fresh SQLite database in a temporary
   directory, migrated to head.
2. Inserts ``--queued`` queued jobs (one ``executemany``; priorities high/normal/low 1:8:1,
   created over the last hour) and ``--finished`` finished jobs (succeeded, some failed, with
   tokens, completed over the last hour so the 1/5/15-minute windows hold rows), and pushes
   ``--queued`` Celery-sized messages onto the priority lists (``inference``, ``inference:5``,
   ``inference:9``) plus four worker heartbeats.
3. Builds the real Flask app (``create_app``) with ``LOUPE_METRICS_CACHE_MS=--cache-ms`` (0: every
   scrape recomputes everything, the worst case) and times ``--scrapes`` requests to ``GET
   /metrics`` and to ``GET /v1/admin/queues`` through the Flask test client (in-process: the
   number is the server's work, without HTTP parsing). The first scrape, which also folds the
   finished history into the per-process counter totals, is reported on its own.
4. Checks the scrape reports the queue depth it was given, prints a table (endpoint, requests,
   p50, p95, max in ms), then, as the LAST stdout line, one JSON object: ``bench, queued,
   finished, scrapes, cache_ms, first_scrape_ms, metrics_p50_ms, metrics_p95_ms, admin_p50_ms,
   admin_p95_ms``; the same object goes to ``--json-out`` when given.

Exit codes: 0 success; 1 a check failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, insert

from infra.localstack.servers import start_redis
from services.admin.heartbeats import RedisHeartbeats
from services.admin.types import WorkerInfo
from services.api.app import create_app
from services.api.root import build_api
from services.auth.keys import Role, SqlKeyStore
from services.db import make_engine, upgrade_to_head
from services.db.schema import jobs
from services.jobs.queue import priority_queue_names
from services.settings import load_settings
from services.types import Priority

# A Celery protocol-2 message is ~1 KB of JSON; LLEN does not care, memory and AOF do.
MESSAGE = json.dumps({"body": "W1siam9iXzAiXSwge30sIHt9XQ==", "pad": "x" * 900})


def _job_row(i: int, owner: str, now: datetime, status: str, priority: Priority) -> dict[str, Any]:
    created = now - timedelta(seconds=3600 * (i % 997) / 997)
    row: dict[str, Any] = {
        "id": f"job_b{status[0]}{i:07d}",
        "owner_id": owner,
        "model": "loupe-tiny-mllama",
        "status": status,
        "messages": [{"role": "user", "content": [{"type": "image", "image_index": 0}]}],
        "images": [{"sha256": "ab" * 32, "content_type": "image/png", "size_bytes": 10,
                    "width": 4, "height": 3}],
        "params": {"max_tokens": 8, "stop": []},
        "price": {"input_per_million": "0.18", "output_per_million": "0.18",
                  "per_image": "0.0005058", "currency": "USD"},
        "metadata": {},
        "timeout_seconds": 600,
        "attempts": 0,
        "created_at": created,
        "priority": priority.value,
    }  # fmt: skip
    if status != "queued":
        row.update(
            attempts=1,
            started_at=created + timedelta(seconds=2),
            completed_at=min(now, created + timedelta(seconds=3 + i % 7)),
            prompt_tokens=40,
            completion_tokens=8,
            error_code="engine_error" if status == "failed" else None,
            error_message="boom" if status == "failed" else None,
        )
    return row


def populate(settings: Any, engine: Engine, queued: int, finished: int) -> None:
    """Jobs in SQL, messages in the Redis lists, four worker heartbeats."""
    now = datetime.now(UTC)
    owner = SqlKeyStore(engine).create("bench", Role.USER, now)[0].id
    cycle = [Priority.HIGH] + [Priority.NORMAL] * 8 + [Priority.LOW]
    rows = [_job_row(i, owner, now, "queued", cycle[i % 10]) for i in range(queued)]
    rows += [
        _job_row(i, owner, now, "failed" if i % 50 == 0 else "succeeded", Priority.NORMAL)
        for i in range(finished)
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(jobs), rows[start : start + 5000])
    client = redis.Redis.from_url(settings.broker_url)
    names = priority_queue_names(settings.inference_queue)
    pipe = client.pipeline(transaction=False)
    for i in range(queued):
        pipe.lpush(names[cycle[i % 10]], MESSAGE)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    beats = RedisHeartbeats(client)
    for pid in range(4):
        beats.beat(
            WorkerInfo("gpu-0", 1000 + pid, ("inference",), "vllm", "loupe-tiny-mllama", 16, 9,
                       now, now),
            ttl_seconds=600,
        )  # fmt: skip
    client.close()


def _time(client: Any, path: str, n: int, headers: dict[str, str]) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.data[:300]!r}")
        response.close()
    return times


def _pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, -(-len(ordered) * q // 100) - 1)], 2)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = start_redis(workdir / "redis")
    try:
        db_url = f"sqlite:///{workdir / 'loupe.db'}"
        upgrade_to_head(db_url)
        settings = load_settings({
            "LOUPE_DATABASE_URL": db_url, "LOUPE_BROKER_URL": server.url,
            "LOUPE_METRICS_CACHE_MS": str(args.cache_ms), "LOUPE_METRICS_OPEN": "true",
            "LOUPE_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # never called here
        })  # fmt: skip
        engine = make_engine(db_url)
        root = build_api(settings, engine=engine)
        try:
            t0 = time.perf_counter()
            populate(settings, engine, args.queued, args.finished)
            print(f"populated {args.queued} queued + {args.finished} finished jobs and "
                  f"{args.queued} messages in {time.perf_counter() - t0:.1f} s")  # fmt: skip
            admin = root.keys.create("bench-admin", Role.ADMIN, datetime.now(UTC))[1]
            client = create_app(root).test_client()
            first = _time(client, "/metrics", 1, {})[0]
            body = client.get("/metrics").get_data(as_text=True)
            depth = sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.splitlines()
                if line.startswith("loupe_queue_depth{")
            )
            if depth != args.queued:
                raise RuntimeError(f"/metrics reports depth {depth}, expected {args.queued}")
            metrics = _time(client, "/metrics", args.scrapes, {})
            admin_times = _time(
                client, "/v1/admin/queues", args.scrapes, {"Authorization": f"Bearer {admin}"}
            )
        finally:
            root.close()
            engine.dispose()
    finally:
        server.stop()
    print(f"\n{'endpoint':<20} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, times in (("/metrics", metrics), ("/v1/admin/queues", admin_times)):
        print(f"{name:<20} {len(times):>8} {_pct(times, 50):>8} {_pct(times, 95):>8} "
              f"{max(times):>8.2f}")  # fmt: skip
    print(f"first /metrics scrape (folds the finished history): {first:.2f} ms; "
          f"mean /metrics {statistics.fmean(metrics):.2f} ms")  # fmt: skip
    return {
        "bench": "metrics",
        "queued": args.queued,
        "finished": args.finished,
        "scrapes": args.scrapes,
        "cache_ms": args.cache_ms,
        "first_scrape_ms": round(first, 2),
        "metrics_p50_ms": _pct(metrics, 50),
        "metrics_p95_ms": _pct(metrics, 95),
        "admin_p50_ms": _pct(admin_times, 50),
        "admin_p95_ms": _pct(admin_times, 95),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench.metrics", description=__doc__)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=2_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--cache-ms", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loupe-bench-metrics-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, workdir)
    except RuntimeError as exc:
        print(f"bench-metrics failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    line = json.dumps(result)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
