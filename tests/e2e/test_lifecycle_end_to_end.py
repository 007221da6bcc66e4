"""Lifecycle controls through a real one-slot Celery worker: cancel, expiry, priority."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from infra.localstack.servers import ServerProcess
from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import make_env, start_worker
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import ApiUnderTest, build_test_api

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "canceled", "expired"}


@dataclass
class OneSlot:
    client: Any
    key: str
    api: ApiUnderTest
    worker: ServerProcess

    def submit(self, **body: Any) -> str:
        image = body.pop("image", None) or make_image(40, 40)
        response = self.client.post(
            "/v1/jobs", json=chat_body(image, **body), headers=auth(self.key)
        )
        assert response.status_code == 202, response.json
        job_id: str = response.json["id"]
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}", headers=auth(self.key)).json
        return body

    def wait(self, job_id: str, until: set[str] = TERMINAL, timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get(job_id)
            if body["status"] in until:
                return body
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} never reached {until}: {body}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(self.key))
        assert response.status_code == 200, response.json
        body: dict[str, Any] = response.json
        return body


@pytest.fixture(scope="module")
def one_slot(redis_server, s3_server, models_dir, tmp_path_factory) -> Iterator[OneSlot]:
    """A worker with ONE slot, so jobs queue behind each other in a known order."""
    workdir = tmp_path_factory.mktemp("one-slot")
    env = make_env(redis_server, s3_server, models_dir, workdir, redis_db=2)
    env["LOUPE_WORKER_CONCURRENCY"] = "1"
    worker = start_worker(env, workdir / "worker.log", "one-slot")
    api = build_test_api(load_settings(env))
    try:
        key = api.keys.create("lifecycle", Role.USER, utcnow())[1]
        yield OneSlot(api.client(), key, api, worker)
    finally:
        api.close()
        worker.stop()


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


LONG = {"max_tokens": 2048, "ignore_eos": True}


def test_e2e_cancel_running_job_ends_within_a_second_and_frees_the_slot(one_slot):
    first = one_slot.submit(**LONG)
    second = one_slot.submit(max_tokens=4)
    one_slot.wait(first, {"running"})
    assert one_slot.get(second)["status"] == "queued"

    canceled_at = utcnow()
    assert one_slot.cancel(first)["cancel_requested"] is True
    one = one_slot.wait(first)
    assert one["status"] == "canceled", one
    assert (_at(one["completed_at"]) - canceled_at).total_seconds() < 1.0
    # The engine request was aborted part-way, and the tokens it used are accounted.
    assert 0 < one["usage"]["completion_tokens"] < 2048
    assert one["usage"]["prompt_tokens"] > 0
    two = one_slot.wait(second)
    assert two["status"] == "succeeded", two
    # The queued job took the freed slot straight away (not after 2048 tokens).
    assert (_at(two["started_at"]) - canceled_at).total_seconds() < 5


def test_e2e_cancel_before_start_never_runs_the_model(one_slot):
    blocker = one_slot.submit(**LONG)
    waiting = one_slot.submit(max_tokens=4)
    one_slot.wait(blocker, {"running"})
    body = one_slot.cancel(waiting)
    assert body["status"] == "canceled"
    one_slot.cancel(blocker)
    one_slot.wait(blocker)
    # The worker pulls the canceled job's message after the blocker and drops it.
    deadline = time.monotonic() + 60
    while f"job {waiting}: duplicate message ignored" not in one_slot.worker.log_text():
        assert time.monotonic() < deadline, one_slot.worker.log_text()[-3000:]
        time.sleep(0.1)
    job = one_slot.api.jobs.get(waiting)
    assert job.status.value == "canceled"
    assert job.attempts == 0 and job.started_at is None and job.prompt_tokens is None
    assert one_slot.get(waiting)["usage"] is None


def test_e2e_expired_job_is_never_run_nor_charged(one_slot):
    blocker = one_slot.submit(**LONG)
    one_slot.wait(blocker, {"running"})
    doomed = one_slot.submit(ttl_seconds=1)
    time.sleep(1.5)
    one_slot.cancel(blocker)
    body = one_slot.wait(doomed)
    assert body["status"] == "expired", body
    assert body["started_at"] is None and body["usage"] is None
    assert body["error"]["code"] == "expired"
    assert one_slot.api.jobs.get(doomed).attempts == 0


def test_e2e_high_priority_job_overtakes_a_queue_of_low_ones(one_slot):
    blocker = one_slot.submit(**LONG)
    one_slot.wait(blocker, {"running"})
    lows = [one_slot.submit(max_tokens=4, priority="low") for _ in range(20)]
    high = one_slot.submit(max_tokens=4, priority="high")
    one_slot.cancel(blocker)
    done = {job_id: one_slot.wait(job_id) for job_id in [high, *lows]}
    assert all(body["status"] == "succeeded" for body in done.values()), done
    finished = sorted(done, key=lambda job_id: _at(done[job_id]["completed_at"]))
    # With the only slot busy, all 20 low jobs were waiting when the high one came, and none was
    # prefetched (prefetch 1 with late acks: the running job fills the window). When the slot
    # frees, the worker's BRPOP reads the lists in priority order: the high job runs first.
    assert finished.index(high) == 0, [done[j]["completed_at"] for j in finished]
