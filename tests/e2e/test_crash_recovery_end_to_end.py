"""A worker killed mid-run: its job is taken over by another worker and billed once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from sqlalchemy import update

from services.auth.keys import Role
from services.clock import utcnow
from services.db.schema import jobs
from services.jobs.maintenance import requeue_lost
from services.jobs.queue import RedisQueuedMessages
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import ledger_rows, make_env, start_worker, wait_until
from tests.e2e.test_jobs_end_to_end import wait_for
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e


def test_e2e_a_job_whose_worker_was_killed_mid_run_is_taken_over_and_billed_once(
    redis_server, s3_server, models_dir, tmp_path
):
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=6)
    broker = redis.Redis.from_url(env["LOUPE_BROKER_URL"])
    broker.flushdb()
    api = build_test_api(load_settings(env))
    first = start_worker(env, tmp_path / "first.log", "first")
    second = None
    try:
        client = api.client()
        key = api.keys.create("crash", Role.USER, utcnow())[1]
        body = chat_body(make_image(), max_tokens=2048, ignore_eos=True)
        job_id = client.post("/v1/jobs", json=body, headers=auth(key)).json["id"]
        wait_until(lambda: api.jobs.get(job_id).status.value == "running", 120, "a run", 0.1)
        first.kill()  # mid-run: no clean-up, no ack, no release
        assert api.jobs.get(job_id).status.value == "running"
        assert broker.hlen("unacked") == 1  # the dead worker's delivery, back only in 2 h

        # The lease (timeout + 60 s) runs out; moved to the past here rather than waited for.
        with api.db_engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        scan = RedisQueuedMessages(broker)
        routes = api.registry
        grace = timedelta(minutes=2)
        assert requeue_lost(api.jobs, scan, api.queue, routes, utcnow(), grace) == 1

        second = start_worker(env, tmp_path / "second.log", "second")
        done = wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json)
        assert done["status"] == "succeeded", done
        assert api.jobs.get(job_id).attempts == 2
        rows = ledger_rows(api, job_id)
        assert len(rows) == 1
        assert rows[0]["completion_tokens"] == done["usage"]["completion_tokens"] > 0
        assert Decimal(done["usage"]["cost"]["total"]) == rows[0]["cost_total"]
    finally:
        first.stop()
        if second is not None:
            second.stop()
        api.close()
        broker.close()
