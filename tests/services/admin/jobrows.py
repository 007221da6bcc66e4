"""Insert jobs in any state with chosen timestamps, straight into the job store."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, update

from services.db.schema import jobs
from services.jobs.types import NewJob
from services.types import ContentPart, ImageRef, Message, PriceCard, Priority, SamplingParams
from tests.support.stores import sql_job_store

_ids = itertools.count(1)
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
    model: str = "loupe-tiny-mllama",
    priority: Priority = Priority.NORMAL,
    price: PriceCard = PRICED,
    **values: Any,
) -> str:
    job_id = f"job_t{next(_ids):06d}"
    sql_job_store(engine).insert(
        NewJob(
            id=job_id,
            owner_id=owner,
            model=model,
            messages=(Message("user", (ContentPart("image", image_index=0),)),),
            images=(ImageRef("ab" * 32, "image/png", 10, 4, 3),),
            params=SamplingParams(max_tokens=8),
            price=price,
            timeout_seconds=30,
            priority=priority,
        ),
        created,
    )
    with engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(status=status, started_at=started, completed_at=completed, **values)
        )
    return job_id
