"""Fair, bounded, crash-proof dispatch on the real stack: a dispatcher process (or two), a
Celery worker, real Redis, SeaweedFS and SQL (SQLite and PostgreSQL).

The worker has 4 slots and the dispatcher a margin of 4, so the broker never holds more than 8
of a queue's jobs (running ones included): a window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from infra.localstack.parts import dispatcher_part, inference_worker_part, process_env, start_parts
from infra.localstack.servers import RedisServer, ServerProcess, start_redis
from services.auth.keys import Role
from services.clock import utcnow
from services.db import upgrade_to_head
from services.db.schema import jobs, service_leases
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import ledger_rows, make_env, wait_until
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e

WINDOW = 4 + 4  # the worker's slots + LOUPE_DISPATCH_MARGIN


class Stack:
    """An API root over ``env`` (in process), the dispatchers and the worker (subprocesses)."""

    def __init__(self, env: dict[str, str], tmp_path: Path, dispatchers: int = 1) -> None:
        self.env = env
        self.api = build_test_api(load_settings(env))
        self.client = self.api.client()
        parts = [dispatcher_part(env, name=f"d{n}") for n in range(dispatchers)]
        parts.append(inference_worker_part(env, node="w"))
        logs = [tmp_path / f"{part.name}.log" for part in parts]
        self.processes = start_parts(
            list(zip(parts, logs, strict=True)), process_env(env, inherit_loupe=False), timeout=240
        )

    def key(self, name: str) -> str:
        return self.api.keys.create(name, Role.USER, utcnow())[1]

    def submit(self, key: str, **extra: Any) -> str:
        body = chat_body(make_image(), **extra)
        response = self.client.post("/v1/jobs", json=body, headers=auth(key))
        assert response.status_code == 202, response.json
        return str(response.json["id"])

    def count(self, *where: Any) -> int:
        with self.api.db_engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar())

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.api.close()


def _env(redis_server, s3_server, models_dir, tmp_path, db: int, **extra: str) -> dict[str, str]:
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=db)
    env |= {"LOUPE_HEARTBEAT_SECONDS": "1", **extra}
    redis.Redis.from_url(env["LOUPE_BROKER_URL"]).flushdb()
    return env


@pytest.fixture
def fair_env(redis_server, s3_server, models_dir, tmp_path, database_url) -> dict[str, str]:
    upgrade_to_head(database_url)
    env = _env(redis_server, s3_server, models_dir, tmp_path, 10)
    return env | {"LOUPE_DATABASE_URL": database_url}


def test_e2e_a_second_keys_job_starts_within_two_windows_of_a_300_job_backlog(fair_env, tmp_path):
    stack = Stack(fair_env, tmp_path)
    try:
        a, b = stack.key("a"), stack.key("b")
        backlog = [stack.submit(a, max_tokens=48, ignore_eos=True) for _ in range(300)]
        late = stack.submit(b)
        submitted = stack.api.jobs.get(late).created_at
        wait_until(lambda: stack.api.jobs.get(late).started_at, 120, "b's job to start", 0.1)
        started = stack.api.jobs.get(late).started_at
        owner_a = stack.api.jobs.get(backlog[0]).owner_id
        ahead = stack.count(
            jobs.c.owner_id == owner_a, jobs.c.started_at >= submitted, jobs.c.started_at < started
        )
        print(f"a's jobs started between b's submit and its start: {ahead}")
        assert ahead <= 2 * WINDOW
        assert stack.count(jobs.c.owner_id == owner_a, jobs.c.status == "queued") > 200
    finally:
        stack.close()


def test_e2e_max_running_2_never_runs_more_than_2_and_all_10_finish(
    redis_server, s3_server, models_dir, tmp_path
):
    stack = Stack(_env(redis_server, s3_server, models_dir, tmp_path, 11), tmp_path)
    seen: list[int] = []
    done = threading.Event()
    try:
        key = stack.key("capped")
        owner = stack.api.keys.authenticate(key).id
        stack.api.quotas.update(owner, utcnow(), max_running=2)
        ids = [stack.submit(key, max_tokens=32, ignore_eos=True) for _ in range(10)]

        def sample() -> None:
            while not done.wait(0.05):
                seen.append(stack.count(jobs.c.owner_id == owner, jobs.c.status == "running"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        finished = jobs.c.id.in_(ids), jobs.c.status == "succeeded"
        wait_until(lambda: stack.count(*finished) == 10, 180, "all 10 jobs", 0.2)
        done.set()
        sampler.join(5)
        print(f"running, sampled every 50 ms: max {max(seen)} over {len(seen)} samples")
        assert seen and max(seen) <= 2
        # Exactly, whatever the machine's speed: the runs' intervals overlap two at a time.
        assert _most_at_once(stack, ids) == 2
    finally:
        done.set()
        stack.close()


def test_e2e_kill_9_of_the_leading_dispatcher_loses_and_double_bills_nothing(
    redis_server, s3_server, models_dir, tmp_path
):
    env = _env(
        redis_server, s3_server, models_dir, tmp_path, 12, LOUPE_DISPATCHER_LEASE_SECONDS="3"
    )
    stack = Stack(env, tmp_path, dispatchers=2)
    try:
        key = stack.key("many")
        ids = [stack.submit(key) for _ in range(200)]
        done = jobs.c.id.in_(ids), jobs.c.status == "succeeded"
        wait_until(lambda: stack.count(*done) >= 20, 180, "the run to get going", 0.2)
        leader = _leader(stack)
        leader.kill()
        killed_at = stack.count(*done)
        print(f"killed the leading dispatcher (pid {leader.pid}) after {killed_at} jobs")
        wait_until(lambda: stack.count(*done) == 200, 300, "all 200 jobs", 0.5)
        for job_id in ids:
            assert len(ledger_rows(stack.api, job_id)) == 1
        assert _leader(stack) is not leader
    finally:
        stack.close()


def _most_at_once(stack: Stack, ids: list[str]) -> int:
    """The most of ``ids`` whose runs (started → completed) overlapped at one instant."""
    edges = []
    for job_id in ids:
        job = stack.api.jobs.get(job_id)
        assert job.started_at is not None and job.completed_at is not None
        edges += [(job.started_at, 1), (job.completed_at, -1)]
    running = most = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def _leader(stack: Stack) -> ServerProcess:
    """The dispatcher process holding the lease (its holder is ``host:pid``)."""
    with stack.api.db_engine.connect() as conn:
        holder = conn.execute(select(service_leases.c.holder)).scalar_one()
    pid = int(holder.rsplit(":", 1)[1])
    (process,) = [p for p in stack.processes if p.pid == pid]
    return process


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """A Redis of this test's own (killed and restarted in it); the current one is last."""
    servers = [start_redis(tmp_path / "redis-1")]
    yield servers
    for server in servers:
        server.stop()


def test_e2e_redis_killed_and_restarted_empty_every_queued_job_runs_within_60_s(
    own_redis, s3_server, models_dir, tmp_path
):
    first = own_redis[0]
    env = _env(first, s3_server, models_dir, tmp_path, 0)
    stack = Stack(env, tmp_path)
    try:
        key = stack.key("survivor")
        # A window's worth at most: the test is about recovery, not this machine's throughput.
        ids = [stack.submit(key, max_tokens=16, ignore_eos=True) for _ in range(WINDOW + 4)]
        wait_until(lambda: stack.count(jobs.c.status == "running") >= 2, 120, "a run", 0.1)
        first.process.kill()  # SIGKILL: every message and heartbeat gone
        own_redis.append(start_redis(tmp_path / "redis-2", port=first.port))  # empty
        restarted = time.monotonic()
        waiting = jobs.c.id.in_(ids), jobs.c.status == "queued"
        wait_until(lambda: stack.count(*waiting) == 0, 60, "every queued job to start", 0.5)
        print(f"Redis restarted empty: every job started {time.monotonic() - restarted:.1f} s on")
        unfinished = jobs.c.id.in_(ids), jobs.c.status.in_(["queued", "running"])
        wait_until(lambda: stack.count(*unfinished) == 0, 180, "every job to finish", 0.5)
        assert stack.count(jobs.c.id.in_(ids), jobs.c.status == "succeeded") == len(ids)
        for job_id in ids:
            assert len(ledger_rows(stack.api, job_id)) == 1
    finally:
        stack.close()
