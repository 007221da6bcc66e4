"""The usage ledger: one row per billed attempt, written in the transaction that finishes it.

Charging policy (one place):

- succeeded jobs pay for the tokens and images they consumed;
- canceled running jobs pay for what they consumed before the abort;
- failed jobs pay for what they consumed when ``LOUPE_CHARGE_FAILED_JOBS`` is true (default);
- jobs that never reached the engine (canceled while queued, expired, failed before the model
  reported token counts) consumed nothing: no ledger row, and their JSON shows no cost.

``jobs.billed`` records the decision on the job row in the same UPDATE, so the job JSON and the
ledger agree about the job's latest attempt. The ledger's primary key is (job id, attempt) and the
insert ignores a conflict, so even a bug that finished an attempt twice could not bill it twice;
the compare-and-set in ``SqlJobStore._transition`` already guarantees one terminal write per
attempt.

A job retried after it ended (``POST /v1/jobs/{id}/retry``) runs again under the same id and a
new attempt number: if its failed attempt was billed, it keeps that row and its next finish gets
one of its own. The customer pays for each attempt that did work, and never twice for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.db.schema import api_keys, jobs, usage_ledger
from services.db.session import reading
from services.types import JobStatus, PriceCard
from services.usage.pricing import money_str, price_job

GroupBy = Literal["day", "model"]


def is_billable(status: JobStatus, prompt_tokens: int | None, charge_failed_jobs: bool) -> bool:
    """Whether a job ending in ``status`` with these token counts gets a ledger row."""
    if prompt_tokens is None:  # the engine never reported usage: nothing was consumed
        return False
    if status is JobStatus.FAILED:
        return charge_failed_jobs
    return status in (JobStatus.SUCCEEDED, JobStatus.CANCELED)


class LedgerBilling:
    """The job store's ``Billing`` port: this module's policy and ledger row."""

    def __init__(self, *, charge_failed_jobs: bool) -> None:
        self._charge_failed_jobs = charge_failed_jobs

    def billable(self, status: JobStatus, prompt_tokens: int | None) -> bool:
        return is_billable(status, prompt_tokens, self._charge_failed_jobs)

    def record(self, conn: Connection, job_id: str, at: datetime) -> None:
        record_usage(conn, job_id, at)


def record_usage(conn: Connection, job_id: str, now: datetime) -> None:
    """Insert the ledger row of a job just finished on ``conn`` (call inside its transaction).

    Reads the job's price snapshot, owner, model, images, token counts and attempt number from
    the same transaction, so the row describes exactly the attempt that was committed.
    """
    row = (
        conn.execute(
            select(
                jobs.c.owner_id,
                jobs.c.model,
                jobs.c.status,
                jobs.c.images,
                jobs.c.price,
                jobs.c.prompt_tokens,
                jobs.c.completion_tokens,
                jobs.c.attempts,
            ).where(jobs.c.id == job_id)
        )
        .mappings()
        .one()
    )
    prompt = int(row["prompt_tokens"] or 0)
    completion = int(row["completion_tokens"] or 0)
    images = len(row["images"])
    price = PriceCard.from_json(row["price"])
    cost = price_job(price, prompt, completion, images)
    values: dict[str, Any] = {
        "job_id": job_id,
        "attempt": row["attempts"],
        "owner_id": row["owner_id"],
        "model": row["model"],
        "status": row["status"],
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "images": images,
        "cost_input": cost.input,
        "cost_output": cost.output,
        "cost_images": cost.images,
        "cost_total": cost.total,
        "currency": cost.currency,
        "price": price.to_json(),
        "billed_at": now,
        "billed_on": now.astimezone(UTC).date(),
    }
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(usage_ledger).values(**values).on_conflict_do_nothing())


@dataclass(frozen=True)
class UsageTotals:
    """Sums over ledger rows; costs are exact Decimals in the ledger's currency (USD)."""

    # Jobs billed in the group; every other field sums their billed attempts. Totals add the
    # groups up, so a job billed on two days (retried) counts once on each of them.
    jobs: int = 0
    images: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_input: Decimal = Decimal(0)
    cost_output: Decimal = Decimal(0)
    cost_images: Decimal = Decimal(0)
    cost_total: Decimal = Decimal(0)

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            *(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__)
        )

    def to_public(self, currency: str = "USD") -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "images": self.images,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost": {
                "input": money_str(self.cost_input),
                "output": money_str(self.cost_output),
                "images": money_str(self.cost_images),
                "total": money_str(self.cost_total),
                "currency": currency,
            },
        }


@dataclass(frozen=True)
class UsageGroup:
    """One line of a report: a day (ISO date) or a model, for one key."""

    key_id: str
    key_name: str
    group: str
    totals: UsageTotals


_SUMS = (
    # Jobs, not rows: a job billed for two attempts in one group counts once there.
    func.count(usage_ledger.c.job_id.distinct()).label("jobs"),
    func.coalesce(func.sum(usage_ledger.c.images), 0).label("images"),
    func.coalesce(func.sum(usage_ledger.c.prompt_tokens), 0).label("prompt_tokens"),
    func.coalesce(func.sum(usage_ledger.c.completion_tokens), 0).label("completion_tokens"),
    func.sum(usage_ledger.c.cost_input).label("cost_input"),
    func.sum(usage_ledger.c.cost_output).label("cost_output"),
    func.sum(usage_ledger.c.cost_images).label("cost_images"),
    func.sum(usage_ledger.c.cost_total).label("cost_total"),
)


def _totals(row: Any) -> UsageTotals:
    return UsageTotals(
        jobs=int(row.jobs),
        images=int(row.images),
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        cost_input=row.cost_input or Decimal(0),
        cost_output=row.cost_output or Decimal(0),
        cost_images=row.cost_images or Decimal(0),
        cost_total=row.cost_total or Decimal(0),
    )


class SqlUsageLedger:
    """Read side of the ledger: reports and month-to-date spend."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def report(
        self, start: date, end: date, group_by: GroupBy, owner_id: str | None = None
    ) -> Sequence[UsageGroup]:
        """Per key and day (or model) sums of rows billed from ``start`` to ``end`` inclusive
        (UTC days); ``owner_id`` narrows it to one key. Ordered by key, then group."""
        group_col = usage_ledger.c.billed_on if group_by == "day" else usage_ledger.c.model
        query = (
            select(usage_ledger.c.owner_id, api_keys.c.name, group_col.label("grp"), *_SUMS)
            .join(api_keys, api_keys.c.id == usage_ledger.c.owner_id)
            .where(usage_ledger.c.billed_on >= start, usage_ledger.c.billed_on <= end)
            .group_by(usage_ledger.c.owner_id, api_keys.c.name, group_col)
            .order_by(usage_ledger.c.owner_id, group_col)
        )
        if owner_id is not None:
            query = query.where(usage_ledger.c.owner_id == owner_id)
        with reading(self._engine) as conn:
            rows = conn.execute(query).all()
        return [
            UsageGroup(
                key_id=row.owner_id,
                key_name=row.name,
                group=row.grp.isoformat() if isinstance(row.grp, date) else str(row.grp),
                totals=_totals(row),
            )
            for row in rows
        ]

    def spent_since(self, owner_id: str, start: date) -> Decimal:
        """Ledger cost of ``owner_id`` billed on or after ``start`` (a UTC day)."""
        with reading(self._engine) as conn:
            value = conn.execute(
                select(func.sum(usage_ledger.c.cost_total)).where(
                    usage_ledger.c.owner_id == owner_id, usage_ledger.c.billed_on >= start
                )
            ).scalar_one()
        return value if isinstance(value, Decimal) else Decimal(0)
