"""Crash-proof runs on the real stack: leases renewed by heartbeat, lapsed ones handed out again
by the dispatcher, and a job that kills its worker every time stopped.

Leases are short here (``LEASE_SECONDS``) to keep the tests quick; production's defaults (30 s
lease, 5 s renewals and sweeps) bring a killed worker's job back within about 35 s.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from infra.localstack.parts import (
    dispatcher_part,
    inference_worker_part,
    process_env,
    start_parts,
)
from infra.localstack.servers import ServerProcess
from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import ledger_rows, make_env, start_worker, wait_until
from tests.e2e.test_jobs_end_to_end import wait_for
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 10
LEASES = {
    "LOUPE_LEASE_SECONDS": str(LEASE_SECONDS),
    "LOUPE_LEASE_RENEW_SECONDS": "2",
    "LOUPE_LOST_SWEEP_SECONDS": "1",
    "LOUPE_MAX_ATTEMPTS": "3",
}
RECOVERY_LIMIT_SECONDS = 45  # the acceptance line: kill -9 → running again on another worker


def _lease_env(redis_server, s3_server, models_dir, tmp_path, redis_db: int) -> dict[str, str]:
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=redis_db) | LEASES
    redis.Redis.from_url(env["LOUPE_BROKER_URL"]).flushdb()
    return env


def _start(env: dict[str, str], tmp_path: Path, *parts: tuple[str, str]) -> list[ServerProcess]:
    """The dispatcher plus an inference worker per (name, app), together."""
    dispatcher = dispatcher_part(env)
    workers = [inference_worker_part(env, node=name, app=app) for name, app in parts]
    logs = [tmp_path / f"{name}.log" for name in ("dispatcher", *(name for name, _ in parts))]
    return start_parts(
        list(zip([dispatcher, *workers], logs, strict=True)),
        process_env(env, inherit_loupe=False),
        timeout=240,
    )


def test_e2e_a_killed_workers_job_runs_again_within_45_s_and_is_billed_once(
    redis_server, s3_server, models_dir, tmp_path
):
    env = _lease_env(redis_server, s3_server, models_dir, tmp_path, redis_db=6)
    api = build_test_api(load_settings(env))
    started = _start(env, tmp_path, ("first", "workers.celery_app"))
    second = None
    try:
        client = api.client()
        key = api.keys.create("crash", Role.USER, utcnow())[1]
        body = chat_body(make_image(), max_tokens=512, ignore_eos=True)
        job_id = client.post("/v1/jobs", json=body, headers=auth(key)).json["id"]
        wait_until(lambda: api.jobs.get(job_id).status.value == "running", 120, "a run", 0.1)
        started[1].kill()  # mid-run: no clean-up, no ack, no release; its lease stops renewing
        killed = time.monotonic()
        assert api.jobs.get(job_id).status.value == "running"
        second = start_worker(env, tmp_path / "second.log", "second")  # ready within the lease

        def rerun() -> bool:
            job = api.jobs.get(job_id)
            return job.attempts == 2 and job.status.value in ("running", "succeeded")

        wait_until(rerun, RECOVERY_LIMIT_SECONDS, "the job to run again", 0.1)
        recovery = time.monotonic() - killed
        print(f"kill -9 → running again: {recovery:.1f} s (lease {LEASE_SECONDS} s)")
        done = wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["metrics"]["queue_seconds"] < recovery  # its time on the dead worker left out
        rows = ledger_rows(api, job_id)
        assert len(rows) == 1
        assert rows[0]["completion_tokens"] == done["usage"]["completion_tokens"] > 0
        assert Decimal(done["usage"]["cost"]["total"]) == rows[0]["cost_total"]
    finally:
        for proc in (*started, second):
            if proc is not None:
                proc.stop()
        api.close()


def test_e2e_a_job_that_kills_its_worker_every_time_ends_worker_lost(
    redis_server, s3_server, models_dir, tmp_path
):
    # One job at a time per worker: a poison job takes down only itself.
    env = _lease_env(redis_server, s3_server, models_dir, tmp_path, redis_db=7)
    env |= {"LOUPE_WORKER_CONCURRENCY": "1"}
    api = build_test_api(load_settings(env))
    poisoned = ("a", "tests.e2e.poison_worker"), ("b", "tests.e2e.poison_worker")
    procs = _start(env, tmp_path, *poisoned)
    try:
        client = api.client()
        key = api.keys.create("poison", Role.USER, utcnow())[1]

        def submit(**extra: object) -> str:
            body = chat_body(make_image(), **extra)
            return str(client.post("/v1/jobs", json=body, headers=auth(key)).json["id"])

        poison = submit(metadata={"poison": "1"})
        others = [submit() for _ in range(6)]

        def ended() -> bool:
            _restart_dead(procs, env, tmp_path)
            return api.jobs.get(poison).status.terminal

        wait_until(ended, 150, "the poison job to end", 0.2)
        job = client.get(f"/v1/jobs/{poison}", headers=auth(key)).json
        assert (job["status"], job["error"]["code"], job["attempts"]) == (
            "failed", "worker_lost", 3,
        )  # fmt: skip
        assert job["usage"] is None and ledger_rows(api, poison) == []
        for job_id in others:  # they kept flowing meanwhile, each run once
            done = wait_for(lambda j=job_id: client.get(f"/v1/jobs/{j}", headers=auth(key)).json)
            assert done["status"] == "succeeded", done
            assert len(ledger_rows(api, job_id)) == 1
    finally:
        for proc in procs:
            proc.stop()
        api.close()


def _restart_dead(procs: list[ServerProcess], env: dict[str, str], tmp_path: Path) -> None:
    """Bring back each inference worker (``procs[1:]``) the poison job killed, as a supervisor
    (Kubernetes, compose's ``restart:``) would."""
    for i, proc in enumerate(procs[1:], start=1):
        if not proc.alive():
            part = inference_worker_part(env, node=f"w{i}", app="tests.e2e.poison_worker")
            log = tmp_path / f"w{i}-{time.monotonic_ns()}.log"
            (procs[i],) = start_parts(
                [(part, log)], process_env(env, inherit_loupe=False), timeout=240
            )
