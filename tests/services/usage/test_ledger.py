"""The usage ledger over real SQL (SQLite and PostgreSQL): written with the finishing
transition, exact, once per job, and equal to what the jobs' JSON says they cost."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert

from services.catalog.registry import build_registry
from services.db.schema import usage_ledger
from services.jobs.presenter import job_to_public
from services.settings import PriceOverride, Settings
from services.types import PriceCard
from services.usage.ledger import SqlUsageLedger, record_usage
from tests.services.usage.conftest import ledger_rows
from tests.support.jobs import insert_job, run_to
from tests.support.keys import new_key
from tests.support.models import LLAMA_90B
from tests.support.stores import sql_job_store

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
CARD_90B = build_registry(Settings()).get(LLAMA_90B).price
OUTCOMES = [
    "succeeded", "failed", "failed_before_engine", "canceled_running", "canceled_queued",
    "expired", "queued", "running",
]  # fmt: skip
BILLED = {"succeeded", "failed", "canceled_running"}


def _job_cost(job) -> Decimal:
    body = job_to_public(job)
    return Decimal(body["usage"]["cost"]["total"]) if body["usage"] else Decimal(0)


def test_ledger_total_equals_sum_of_job_costs_over_200_mixed_jobs(db):
    store = sql_job_store(db)
    owners = [new_key(db, f"k{i}", at=T0).id for i in range(3)]
    rng = random.Random(5)
    expected_billed = 0
    for i in range(200):
        outcome = OUTCOMES[i % len(OUTCOMES)]
        job_id = f"job_{i:04d}"
        insert_job(
            store,
            owners[i % 3],
            T0,
            job_id=job_id,
            price=CARD_90B,
            model=LLAMA_90B,
            images=rng.choice([0, 1]),
        )
        run_to(
            store, job_id, outcome, T0 + timedelta(days=i % 5),
            prompt=rng.randint(1, 3_000_000), completion=rng.randint(0, 50_000),
        )  # fmt: skip
        expected_billed += outcome in BILLED
    job_costs = sum(_job_cost(store.get(f"job_{i:04d}")) for i in range(200))
    rows = ledger_rows(db)
    assert len(rows) == expected_billed
    assert sum(r["cost_total"] for r in rows) == job_costs
    for row in rows:
        assert row["cost_total"] == row["cost_input"] + row["cost_output"] + row["cost_images"]
        assert _job_cost(store.get(row["job_id"])) == row["cost_total"]
    report = SqlUsageLedger(db).report(date(2026, 11, 1), date(2026, 11, 30), "day")
    assert sum(g.totals.cost_total for g in report) == job_costs
    assert sum(g.totals.jobs for g in report) == expected_billed
    assert job_costs > 0 and isinstance(job_costs, Decimal)


def test_ledger_skips_failed_jobs_when_policy_says_so_and_job_json_agrees(db):
    store = sql_job_store(db, charge_failed_jobs=False)
    owner = new_key(db, "k", at=T0).id
    insert_job(store, owner, T0, job_id="job_f", price=CARD_90B, model=LLAMA_90B)
    run_to(store, "job_f", "failed", T0)
    insert_job(store, owner, T0, job_id="job_s", price=CARD_90B, model=LLAMA_90B)
    run_to(store, "job_s", "succeeded", T0)
    assert [r["job_id"] for r in ledger_rows(db)] == ["job_s"]
    failed = job_to_public(store.get("job_f"))
    assert failed["usage"]["prompt_tokens"] == 100  # what it consumed is still reported
    assert failed["usage"]["cost"]["total"] == "0"
    assert store.get("job_f").billed is False and store.get("job_s").billed is True


def test_ledger_row_describes_the_job_exactly(db):
    store = sql_job_store(db)
    owner = new_key(db, "k", at=T0).id
    insert_job(store, owner, T0, job_id="job_x", price=CARD_90B, model=LLAMA_90B, images=1)
    run_to(store, "job_x", "succeeded", T0, prompt=1_000_000, completion=100_000)
    (row,) = ledger_rows(db)
    assert row["owner_id"] == owner and row["model"] == LLAMA_90B and row["status"] == "succeeded"
    assert (row["prompt_tokens"], row["completion_tokens"], row["images"]) == (
        1_000_000,
        100_000,
        1,
    )
    assert row["cost_input"] == Decimal("0.35") and row["cost_output"] == Decimal("0.04")
    assert row["cost_images"] == Decimal("0.0005058")
    assert row["cost_total"] == Decimal("0.3905058")
    assert row["billed_on"] == date(2026, 11, 3) and row["currency"] == "USD"
    assert job_to_public(store.get("job_x"))["usage"]["cost"]["total"] == "0.3905058"


def test_ledger_finishing_twice_bills_once(db):
    store = sql_job_store(db)
    owner = new_key(db, "k", at=T0).id
    insert_job(store, owner, T0, job_id="job_d", price=CARD_90B, model=LLAMA_90B)
    job = store.claim("job_d", T0, timedelta(seconds=60))
    args = {"text": "t", "finish_reason": "stop", "prompt_tokens": 5, "completion_tokens": 5}
    assert store.succeed("job_d", job.attempts, T0, **args)
    assert not store.succeed("job_d", job.attempts, T0, **args)  # redelivered finish: CAS says no
    assert not store.cancel_running("job_d", job.attempts, T0, prompt_tokens=5, completion_tokens=5)
    with db.begin() as conn:  # even a direct second insert is ignored, not an error
        record_usage(conn, "job_d", T0 + timedelta(days=1))
    rows = ledger_rows(db)
    assert len(rows) == 1 and rows[0]["billed_on"] == date(2026, 11, 3)


def test_ledger_price_change_after_submit_keeps_the_jobs_price(db):
    store = sql_job_store(db)
    owner = new_key(db, "k", at=T0).id
    insert_job(store, owner, T0, job_id="job_old", price=CARD_90B, model=LLAMA_90B)
    # The deployment raises its prices after the job was submitted.
    raised = PriceOverride(LLAMA_90B, input_per_million=Decimal("9"), per_image=Decimal("1"))
    new = build_registry(Settings(price_overrides=(raised,))).get(LLAMA_90B).price
    assert new.input_per_million == Decimal("9") and new.output_per_million == Decimal("0.40")
    insert_job(store, owner, T0, job_id="job_new", price=new, model=LLAMA_90B)
    for job_id in ("job_old", "job_new"):
        run_to(store, job_id, "succeeded", T0, prompt=1_000_000, completion=100_000)
    costs = {r["job_id"]: r["cost_total"] for r in ledger_rows(db)}
    assert costs == {"job_old": Decimal("0.3905058"), "job_new": Decimal("10.04")}


def test_ledger_money_column_is_exact_at_large_and_tiny_amounts(db):
    owner = new_key(db, "k", at=T0).id
    amounts = [Decimal("123456789.0123456789"), Decimal("0.0000000001"), Decimal(0)]
    with db.begin() as conn:
        for i, amount in enumerate(amounts):
            conn.execute(
                insert(usage_ledger).values(
                    job_id=f"job_{i}", attempt=1, owner_id=owner, model="m", status="succeeded",
                    prompt_tokens=0, completion_tokens=0, images=0, cost_input=amount,
                    cost_output=0, cost_images=0, cost_total=amount, currency="USD",
                    price=PriceCard().to_json(), billed_at=T0, billed_on=T0.date(),
                )
            )  # fmt: skip
    assert sorted(r["cost_input"] for r in ledger_rows(db)) == sorted(amounts)
    assert SqlUsageLedger(db).spent_since(owner, date(2026, 11, 1)) == sum(amounts)


def test_ledger_money_refuses_more_decimals_than_it_stores(db):
    owner = new_key(db, "k", at=T0).id
    with pytest.raises(Exception, match="decimal places"), db.begin() as conn:
        conn.execute(
            insert(usage_ledger).values(
                job_id="job_z", attempt=1, owner_id=owner, model="m", status="succeeded", prompt_tokens=0,
                completion_tokens=0, images=0, cost_input=Decimal("0.00000000001"),
                cost_output=0, cost_images=0, cost_total=0, currency="USD",
                price=PriceCard().to_json(), billed_at=T0, billed_on=T0.date(),
            )
        )  # fmt: skip


@pytest.mark.parametrize("charge_failed_jobs", [True, False])
def test_ledger_bills_each_attempt_of_a_retried_job_once(db, charge_failed_jobs):
    store = sql_job_store(db, charge_failed_jobs=charge_failed_jobs)
    owner = new_key(db, "k", at=T0).id
    insert_job(store, owner, T0, job_id="job_r", price=CARD_90B, model=LLAMA_90B)
    failed = run_to(store, "job_r", "failed", T0, prompt=1_000_000, completion=50_000)
    assert store.retry("job_r", T0 + timedelta(days=1)) is not None
    done = run_to(store, "job_r", "succeeded", T0 + timedelta(days=1), prompt=1_000_000)
    with db.begin() as conn:  # a redelivered finish of the second attempt bills nothing more
        record_usage(conn, "job_r", T0 + timedelta(days=2))
    rows = sorted(ledger_rows(db), key=lambda r: r["attempt"])
    billed = [(1, "failed")] if charge_failed_jobs else []
    assert [(r["attempt"], r["status"]) for r in rows] == [*billed, (2, "succeeded")]
    assert rows[-1]["cost_total"] == _job_cost(done)  # the job shows its latest attempt
    total = _job_cost(done) + (_job_cost(failed) if charge_failed_jobs else 0)
    report = SqlUsageLedger(db).report(date(2026, 11, 1), date(2026, 11, 30), "model")
    assert [(g.totals.jobs, g.totals.cost_total) for g in report] == [(1, total)]
    assert SqlUsageLedger(db).spent_since(owner, date(2026, 11, 1)) == total
