"""The dispatch benchmark's pure helpers: percentiles, the result line, the table, the checks and
the rows it inserts. The benchmark itself runs under ``make bench-dispatch``, not here."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from infra.bench import dispatch

RESULT_KEYS = {
    "bench", "database", "idle_rounds", "idle_p50_ms", "idle_p95_ms", "dispatch_jobs",
    "dispatch_keys", "dispatch_passes", "dispatch_jobs_per_s", "backlog", "fair_wait_s",
    "fair_ahead", "backlog_jobs_per_s", "fifo_wait_s", "recovery_s", "lease_seconds",
}  # fmt: skip
START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _results(**changes: object) -> dispatch.Results:
    results = dispatch.Results(
        database="sqlite",
        idle_ms=[float(ms) for ms in range(1, 21)],
        throughput=dispatch.Throughput(jobs=5000, keys=10, passes=10, seconds=2.5),
        fairness=dispatch.Fairness(
            backlog=1000, wait_s=1.5, ahead=4, queued_ahead=984, backlog_rate=2.0, window=8
        ),
        recovery_s=10.2,
    )
    return replace(results, **changes)  # type: ignore[arg-type]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]

    assert dispatch.percentile(values, 50) == 50.0
    assert dispatch.percentile(values, 95) == 95.0
    assert dispatch.percentile([7.123], 95) == 7.12


def test_rates_are_jobs_over_seconds_and_fifo_is_the_queued_backlog_at_that_rate() -> None:
    results = _results()

    assert results.throughput.jobs_per_s == 2000.0
    assert results.fairness.fifo_wait_s == 492.0


def test_summary_is_one_json_object_with_every_documented_key() -> None:
    result = json.loads(json.dumps(dispatch.summary(_results())))

    assert set(result) == RESULT_KEYS
    assert (result["bench"], result["database"], result["idle_rounds"]) == (
        "dispatch",
        "sqlite",
        20,
    )
    assert (result["idle_p50_ms"], result["idle_p95_ms"]) == (10.0, 19.0)
    assert (result["dispatch_jobs_per_s"], result["fifo_wait_s"]) == (2000.0, 492.0)
    assert (result["fair_wait_s"], result["recovery_s"], result["lease_seconds"]) == (1.5, 10.2, 10)


def test_table_has_a_row_per_measurement_with_its_value() -> None:
    table = dispatch.format_table(dispatch.summary(_results())).splitlines()

    assert table[0].split()[:3] == ["measurement", "value", "unit"]
    assert len(table) == 7
    assert any("dispatch throughput" in row and "2000.0" in row for row in table)
    assert any("start behind 1000 jobs" in row and "1.5" in row for row in table)
    assert any("kill -9" in row and "10.2" in row for row in table)


def test_no_problem_when_fair_and_recovered_in_time() -> None:
    assert dispatch.problems(_results()) == []


def test_problems_name_unfairness_and_slow_recovery() -> None:
    unfair = replace(_results().fairness, wait_s=60.0, ahead=17)

    found = dispatch.problems(_results(fairness=unfair, recovery_s=50.0))

    assert len(found) == 3
    assert "FIFO" in found[0] and "two windows (16)" in found[1] and "50.0 s" in found[2]


def test_database_name_is_the_backend() -> None:
    assert dispatch.database_name("sqlite:////tmp/x.db") == "sqlite"
    assert dispatch.database_name("postgresql+psycopg://u@127.0.0.1/db") == "postgresql"


def test_fresh_copies_are_queued_new_jobs_in_order() -> None:
    template = {"id": "job_1", "owner_id": "key_a", "status": "succeeded", "attempts": 1,
                "started_at": START, "completed_tokens": 8, "images": [{"sha256": "ab"}]}  # fmt: skip

    copies = dispatch.fresh_copies(template, 3, START)

    assert len({row["id"] for row in copies} | {"job_1"}) == 4
    assert [row["created_at"] for row in copies] == [
        START + timedelta(microseconds=i) for i in range(3)
    ]
    assert all(row["status"] == "queued" and row["attempts"] == 0 for row in copies)
    assert all(row["started_at"] is None and row["dispatched_at"] is None for row in copies)
    assert all(row["owner_id"] == "key_a" and row["images"] == [{"sha256": "ab"}] for row in copies)


def test_queued_rows_share_the_jobs_round_robin_between_keys() -> None:
    rows = dispatch.queued_rows(["a", "b", "c"], 7, START)

    assert [row["owner_id"] for row in rows] == ["a", "b", "c", "a", "b", "c", "a"]
    assert all(row["status"] == "queued" and row["model"] == dispatch.MODEL for row in rows)
    assert rows[-1]["created_at"] == START + timedelta(microseconds=6)
