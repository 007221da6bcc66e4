"""Insert jobs in any state with chosen timestamps, straight into the job store."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, update

from services.db.schema import jobs
from services.types import PriceCard, Priority
from tests.support.jobs import TINY_MODEL, new_job
from tests.support.stores import sql_job_store

PRICED = PriceCard(
    input_per_million=Decimal("1"), output_per_million=Decimal("2"), per_image=Decimal("0.01")
)


def add_job(
    engine: Engine,
    owner: str,
    *,
    created: datetime,
    status: str = "queued",
    started: datetime | None = None,
    completed: datetime | None = None,
    model: str = TINY_MODEL,
    priority: Priority = Priority.NORMAL,
    price: PriceCard = PRICED,
    **values: Any,
) -> str:
    """A job with one image, created at ``created``, then set to ``status`` and its times (and
    any other ``values``) as written, with no transition's checks: for statistics fixtures."""
    job = new_job(owner, model=model, priority=priority, price=price)
    sql_job_store(engine).insert(job, created)
    with engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id)
            .values(status=status, started_at=started, completed_at=completed, **values)
        )
    return job.id
