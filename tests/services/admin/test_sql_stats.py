"""SqlJobStats and TotalsCache on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.admin.sql_stats import SqlJobStats, TotalsCache, percentile
from services.admin.types import QUEUE_WAIT_BUCKETS, RUN_TIME_BUCKETS
from services.db import make_engine
from services.types import Priority
from tests.services.admin.jobrows import add_job
from tests.support.keys import new_key

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def owner(db):
    return new_key(db, "owner", at=ago(3600)).id


def finished(db, owner, *, wait, run, end_ago, status="succeeded", **kw):
    completed = ago(end_ago)
    started = completed - timedelta(seconds=run)
    return add_job(
        db, owner, created=started - timedelta(seconds=wait), started=started,
        completed=completed, status=status, **kw,
    )  # fmt: skip


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_stats_counts_by_status_running_by_model_and_oldest_queued(db, owner):
    add_job(db, owner, created=ago(30), priority=Priority.HIGH)
    add_job(db, owner, created=ago(90))
    add_job(db, owner, created=ago(10))
    add_job(db, owner, created=ago(5), status="running", started=ago(4), model="m-a")
    add_job(db, owner, created=ago(5), status="running", started=ago(4), model="m-b")
    add_job(db, owner, created=ago(5), status="running", started=ago(4), model="m-b")
    finished(db, owner, wait=1, run=1, end_ago=1)

    counts = SqlJobStats(db).counts()

    assert counts.by_status == {
        "queued": 3, "running": 3, "succeeded": 1, "failed": 0, "canceled": 0, "expired": 0,
    }  # fmt: skip
    assert counts.running_by_model == {"m-a": 1, "m-b": 2}
    assert counts.oldest_queued == {Priority.HIGH: ago(30), Priority.NORMAL: ago(90)}


def test_stats_windows_report_throughput_and_percentiles(db, owner):
    for i in range(10):  # last minute: waits 1..10 s, runs 0.5 s
        finished(db, owner, wait=i + 1, run=0.5, end_ago=30)
    finished(db, owner, wait=100, run=20, end_ago=4 * 60, status="failed")  # 5 and 15 min
    finished(db, owner, wait=1, run=1, end_ago=10 * 60)  # 15 min only
    finished(db, owner, wait=1, run=1, end_ago=20 * 60)  # outside every window
    add_job(db, owner, created=ago(30), status="canceled", completed=ago(20))  # never started

    w1, w5, w15 = SqlJobStats(db).windows(NOW)

    assert (w1.minutes, w1.completed, w1.by_status) == (1, 11, {"succeeded": 10, "canceled": 1})
    assert w1.per_minute == 11
    assert (w1.queue_wait.p50, w1.queue_wait.p95) == (5.0, 10.0)
    assert (w1.run_time.p50, w1.run_time.p95) == (0.5, 0.5)
    assert (w5.completed, w5.by_status["failed"], w5.queue_wait.p95) == (12, 1, 100.0)
    assert w15.completed == 13
    assert w15.per_minute == pytest.approx(13 / 15)
    assert not w15.truncated


def test_stats_windows_cap_rows_and_say_so(db, owner):
    for _ in range(5):
        finished(db, owner, wait=1, run=1, end_ago=10)
    (w1,) = SqlJobStats(db).windows(NOW, minutes=(1,), cap=3)
    assert w1.completed == 3
    assert w1.truncated


def test_stats_recent_failures_newest_first_with_errors(db, owner):
    finished(db, owner, wait=1, run=1, end_ago=60, status="failed", error_code="a",
             error_message="older")  # fmt: skip
    newest = finished(db, owner, wait=1, run=1, end_ago=5, status="failed",
                      error_code="engine_error", error_message="boom")  # fmt: skip
    finished(db, owner, wait=1, run=1, end_ago=1)

    failures = SqlJobStats(db).recent_failures(limit=5)

    assert [f.error_message for f in failures] == ["boom", "older"]
    assert failures[0].job_id == newest
    assert failures[0].error_code == "engine_error"
    assert failures[0].completed_at == ago(5)


def test_stats_totals_count_tokens_cost_and_histograms(db, owner):
    finished(db, owner, wait=0.3, run=2, end_ago=10, prompt_tokens=100, completion_tokens=50)
    finished(db, owner, wait=40, run=0.2, end_ago=10, prompt_tokens=10, completion_tokens=5)
    finished(db, owner, wait=1, run=1, end_ago=10, status="failed", model="other")
    add_job(db, owner, created=ago(30), status="canceled", completed=ago(20))
    add_job(db, owner, created=ago(30))  # queued: not counted
    add_job(db, owner, created=ago(30), status="running", started=ago(3))  # not final

    totals = SqlJobStats(db).totals()

    tiny = totals["loupe-tiny-mllama"]
    assert tiny.jobs_by_status == {"succeeded": 2, "canceled": 1}
    assert (tiny.prompt_tokens, tiny.completion_tokens) == (110, 55)
    # 110 in x $1/M + 55 out x $2/M + 2 billed images x $0.01
    assert tiny.cost == {"USD": Decimal("0.00011") + Decimal("0.00011") + Decimal("0.02")}
    wait = dict(zip(QUEUE_WAIT_BUCKETS, tiny.queue_wait.buckets, strict=True))
    assert (wait[0.1], wait[0.5], wait[30.0], wait[60.0]) == (0, 1, 1, 2)
    assert tiny.queue_wait.count == 2
    assert tiny.queue_wait.total == pytest.approx(40.3, abs=0.01)
    run = dict(zip(RUN_TIME_BUCKETS, tiny.run_time.buckets, strict=True))
    assert (run[0.1], run[0.25], run[1.0], run[2.5]) == (0, 1, 1, 2)
    assert tiny.run_time.total == pytest.approx(2.2, abs=0.01)
    assert totals["other"].jobs_by_status == {"failed": 1}
    assert totals["other"].cost == {"USD": Decimal(0)}  # no usage recorded: nothing billed


def test_stats_totals_count_jobs_that_lost_their_worker(db, owner):
    finished(db, owner, wait=1, run=1, end_ago=10, status="failed", error_code="worker_lost")
    finished(db, owner, wait=1, run=1, end_ago=10, status="failed", error_code="engine_error")
    finished(db, owner, wait=1, run=1, end_ago=10)

    tiny = SqlJobStats(db).totals()["loupe-tiny-mllama"]

    assert tiny.jobs_by_status == {"failed": 2, "succeeded": 1}
    assert tiny.worker_lost == 1


def test_totals_cache_adds_new_rows_once_and_keeps_settled_ones(db, owner):
    stats = SqlJobStats(db)
    cache = TotalsCache(stats, settle=timedelta(minutes=5))
    finished(db, owner, wait=1, run=1, end_ago=3600, prompt_tokens=1, completion_tokens=1)
    finished(db, owner, wait=1, run=1, end_ago=10, prompt_tokens=1, completion_tokens=1)

    first = cache.totals(NOW)["loupe-tiny-mllama"]
    assert first.jobs_by_status == {"succeeded": 2}

    finished(db, owner, wait=1, run=1, end_ago=5, status="failed")
    later = cache.totals(NOW + timedelta(minutes=10))["loupe-tiny-mllama"]

    assert later.jobs_by_status == {"succeeded": 2, "failed": 1}
    assert later.queue_wait.count == 3
    assert later == stats.totals()["loupe-tiny-mllama"]


def test_queue_wait_is_the_jobs_queue_time_not_its_time_on_a_dead_worker(db, owner):
    # Created 60 s before it started, but 50 of those were a lost attempt's run: queued 10 s.
    add_job(db, owner, created=ago(70), status="succeeded", started=ago(10), completed=ago(5),
            queue_seconds=10.0, prompt_tokens=1, completion_tokens=1)  # fmt: skip

    tiny = SqlJobStats(db).totals()["loupe-tiny-mllama"]

    assert tiny.queue_wait.total == pytest.approx(10.0, abs=0.01)
