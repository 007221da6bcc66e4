"""Real SQL stores wired as the composition roots wire them."""

from __future__ import annotations

from sqlalchemy import Engine

from services.jobs.store import SqlJobStore
from services.usage.ledger import LedgerBilling


def sql_job_store(engine: Engine, *, charge_failed_jobs: bool = True) -> SqlJobStore:
    """The job store with the usage ledger as its billing port, as in production."""
    return SqlJobStore(engine, billing=LedgerBilling(charge_failed_jobs=charge_failed_jobs))
