"""PostgreSQL refusing the workers' connections for 20 s in the middle of a run.

The workers reach their own database through a TCP proxy the test controls (never the machine's
server itself): the proxy cuts every connection and refuses new ones, then accepts again. The
test watches the jobs directly. Nothing may be lost: every job succeeds on its first attempt
(no finished result thrown away, no re-run), is billed once, no message is dropped (the lost-job
sweep never has to publish one again), and no job stays ``running`` past its lease + 30 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import select

from infra.localstack.parts import (
    dispatcher_part,
    inference_worker_part,
    process_env,
    start_parts,
)
from infra.localstack.servers import ServerProcess
from services.auth.keys import Role
from services.clock import utcnow
from services.db import upgrade_to_head
from services.db.schema import jobs
from services.settings import load_settings
from tests.conftest import _fresh_postgres_database, auth
from tests.e2e.conftest import ledger_rows, make_env, wait_until
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import ApiUnderTest, build_test_api
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

OUTAGE_SECONDS = 20
JOBS = 100  # of 16 to 64 tokens
LEASE_SECONDS = 30
LEASES = {
    "LOUPE_LEASE_SECONDS": str(LEASE_SECONDS),
    "LOUPE_LEASE_RENEW_SECONDS": "3",
    "LOUPE_LOST_SWEEP_SECONDS": "2",
}


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[str, TcpProxy]]:
    """(direct URL, proxy) of a fresh database of our own; the proxy forwards to its server."""
    for url in _fresh_postgres_database():
        upgrade_to_head(url)
        parts = urlsplit(url)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        try:
            yield url, proxy
        finally:
            proxy.close()


def _via(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Watch:
    """Samples the running jobs' leases every 0.5 s (directly, past the proxy) and records any
    job still ``running`` more than 30 s after its lease ran out."""

    def __init__(self, api: ApiUnderTest) -> None:
        self._api = api
        self.overdue: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        query = select(jobs.c.id, jobs.c.lease_expires_at).where(jobs.c.status == "running")
        while not self._stop.wait(0.5):
            with self._api.db_engine.connect() as conn:
                rows = list(conn.execute(query))
            now = utcnow()
            for job_id, lease in rows:
                if lease is not None and now > lease + timedelta(seconds=30):
                    self.overdue.append((job_id, (now - lease).total_seconds()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_e2e_a_20_s_database_outage_loses_no_job_result_or_message(
    redis_server, s3_server, models_dir, tmp_path, proxied_postgres
):
    direct, proxy = proxied_postgres
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=8) | LEASES
    redis.Redis.from_url(env["LOUPE_BROKER_URL"]).flushdb()
    api = build_test_api(load_settings(env | {"LOUPE_DATABASE_URL": direct}))
    procs = _start(env | {"LOUPE_DATABASE_URL": _via(direct, proxy)}, tmp_path)
    watch = Watch(api)
    try:
        client = api.client()
        key = api.keys.create("outage", Role.USER, utcnow())[1]
        # Short and long ones mixed: some claimed jobs finish while the database is away.
        bodies = [
            chat_body(make_image(), max_tokens=16 * (1 + n % 4), ignore_eos=True)
            for n in range(JOBS)
        ]
        ids = [client.post("/v1/jobs", json=b, headers=auth(key)).json["id"] for b in bodies]
        wait_until(lambda: _count(api, ids, "running") >= 4, 120, "jobs running", 0.1)
        proxy.refuse()  # the database is gone for the workers, mid-run
        outage = (utcnow(), utcnow() + timedelta(seconds=OUTAGE_SECONDS))
        time.sleep(OUTAGE_SECONDS)
        proxy.accept()
        wait_until(lambda: _count(api, ids, "succeeded") == JOBS, 400, "every job to finish", 0.5)
        finished = [api.jobs.get(job_id) for job_id in ids]
        for job in finished:
            assert job.attempts == 1, (job.id, job.attempts)  # no result thrown away, no re-run
            assert len(ledger_rows(api, job.id)) == 1
        # Some results were finished while the database was away, and written when it returned.
        assert any(outage[0] < job.completed_at < outage[1] for job in finished if job.completed_at)
    finally:
        watch.close()
        for proc in procs:
            proc.stop()
        api.close()
    assert watch.overdue == []
    dispatcher_log = (tmp_path / "dispatcher.log").read_text()
    assert "lost its message" not in dispatcher_log  # no message had to be replaced


def _count(api: ApiUnderTest, ids: list[str], status: str) -> int:
    with api.db_engine.connect() as conn:
        query = select(jobs.c.status).where(jobs.c.id.in_(ids))
        return sum(1 for (value,) in conn.execute(query) if value == status)


def _start(env: dict[str, str], tmp_path: Path) -> list[ServerProcess]:
    dispatcher = dispatcher_part(env)
    w1 = inference_worker_part(env, node="w1")
    w2 = inference_worker_part(env, node="w2")
    parts = [(dispatcher, tmp_path / "dispatcher.log"), (w1, tmp_path / "w1.log"),
             (w2, tmp_path / "w2.log")]  # fmt: skip
    return start_parts(parts, process_env(env, inherit_loupe=False), timeout=240)
