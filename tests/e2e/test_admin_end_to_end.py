"""Admin monitoring on the real stack: gunicorn API, Redis, SeaweedFS, SQLite, a Celery worker.

50 jobs with no worker → depth 50 and a growing oldest age in the JSON and in /metrics; a worker
starts → it is listed with its slots and the queue drains to 0; ``kill -9`` → the worker drops out
within its heartbeat TTL.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import auth
from tests.e2e.conftest import ADMIN_HEARTBEAT_TTL_SECONDS, start_worker, wait_until
from tests.helpers import chat_body
from tests.support.images import make_image

pytestmark = pytest.mark.e2e
N_JOBS = 50


def admin_view(api: str, admin: str) -> dict[str, Any]:
    response = requests.get(f"{api}/v1/admin/queues", headers=auth(admin), timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def scrape(api: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{api}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def metric_sum(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        v for (n, lbls), v in samples.items()
        if n == name and all((k, val) in lbls for k, val in labels.items())
    )  # fmt: skip


def test_e2e_admin_depth_age_drain_and_worker_heartbeats(
    admin_api, admin_env, admin_keys, tmp_path
):
    user, admin = admin_keys
    # The admin stack is shared with the dashboard test: count what this test adds.
    before = admin_view(admin_api, admin)
    done_before = before["jobs"]["by_status"]["succeeded"]
    finished_before = before["throughput"]["15m"]["completed"]
    total_before = metric_sum(scrape(admin_api), "loupe_jobs_total", status="succeeded")
    image = make_image()
    session = requests.Session()
    for i in range(N_JOBS):
        response = session.post(
            f"{admin_api}/v1/jobs",
            json=chat_body(image, max_tokens=4, priority="high" if i % 10 == 0 else "normal"),
            headers=auth(user),
            timeout=60,
        )
        assert response.status_code == 202, response.text
    session.close()

    # No worker: everything waits, and the oldest job keeps getting older.
    first = admin_view(admin_api, admin)
    queue = first["queues"][0]
    assert queue["queue"] == "inference"
    assert queue["depth"] == N_JOBS
    assert {p["priority"]: p["depth"] for p in queue["priorities"]} == {
        "high": 5, "normal": 45, "low": 0,
    }  # fmt: skip
    assert first["jobs"]["by_status"]["queued"] == N_JOBS
    assert first["workers"]["online"] == 0
    metrics_first = scrape(admin_api)
    assert metric_sum(metrics_first, "loupe_queue_depth", queue="inference") == N_JOBS
    assert metrics_first[("loupe_workers_online", ())] == 0
    age_first = metric_sum(metrics_first, "loupe_queue_oldest_age_seconds", priority="normal")
    time.sleep(1.5)
    second = admin_view(admin_api, admin)
    assert second["queues"][0]["oldest_age_seconds"] > queue["oldest_age_seconds"]
    age_second = metric_sum(scrape(admin_api), "loupe_queue_oldest_age_seconds", priority="normal")
    assert age_second > age_first

    # A worker starts: it is listed with its slots, and the queue drains.
    worker = start_worker(admin_env, tmp_path / "worker.log", "admin-e2e")
    try:
        listed = wait_until(
            lambda: admin_view(admin_api, admin)["workers"]["items"], 60, "the worker's heartbeat"
        )
        (item,) = listed
        assert item["pid"] == worker.pid
        assert item["slots"] == int(admin_env["LOUPE_WORKER_CONCURRENCY"])
        assert item["queues"] == ["inference"]
        assert (item["engine"], item["model"]) == ("transformers", "loupe-tiny-mllama")

        def drained() -> dict[str, Any] | None:
            view = admin_view(admin_api, admin)
            by_status = view["jobs"]["by_status"]
            done = view["queues"][0]["depth"] == 0 and by_status["queued"] == 0
            return view if done and by_status["running"] == 0 else None

        view = wait_until(drained, 600, "the queue to drain")
        assert view["queues"][0]["unacked"] == 0
        assert view["jobs"]["by_status"]["succeeded"] == done_before + N_JOBS
        assert view["throughput"]["15m"]["completed"] == finished_before + N_JOBS
        assert view["throughput"]["15m"]["run_seconds"]["p95"] > 0
        # slots_in_use is as fresh as the last heartbeat (every second here).
        wait_until(
            lambda: admin_view(admin_api, admin)["workers"]["items"][0]["slots_in_use"] == 0,
            30,
            "the heartbeat to report idle slots",
        )
        samples = scrape(admin_api)
        assert metric_sum(samples, "loupe_queue_depth") == 0
        assert metric_sum(samples, "loupe_jobs_total", status="succeeded") == total_before + N_JOBS
        assert samples[("loupe_workers_online", ())] == 1

        # kill -9: no clean shutdown, so only the heartbeat's TTL removes the worker.
        worker.kill()
        killed_at = time.monotonic()
        wait_until(
            lambda: admin_view(admin_api, admin)["workers"]["online"] == 0,
            ADMIN_HEARTBEAT_TTL_SECONDS + 30,
            "the killed worker to drop out",
        )
        gone_after = time.monotonic() - killed_at
        print(
            f"killed worker dropped out after {gone_after:.2f} s (ttl {ADMIN_HEARTBEAT_TTL_SECONDS} s)"
        )
        # Its last beat was at most one TTL before expiry; allow polling and request slack.
        assert gone_after <= ADMIN_HEARTBEAT_TTL_SECONDS + 2
        assert scrape(admin_api)[("loupe_workers_online", ())] == 0
    finally:
        worker.kill()
