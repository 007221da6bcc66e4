"""Migration 0012 (the ledger keyed by job and attempt) matches the schema, numbers the rows it
finds by their job's attempt, and downgrades only when no job has two rows; SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import column, insert, inspect, select, table, update

from services.db import make_engine, upgrade_to_head
from services.db.migrate import alembic_config
from services.db.schema import jobs, usage_ledger
from services.usage.ledger import record_usage
from tests.support.jobs import insert_job
from tests.support.keys import new_key
from tests.support.migrations import schema_diffs
from tests.support.stores import sql_job_store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# The ledger as revision 0011 left it: every column but the attempt.
LEDGER_0011 = table(
    "usage_ledger", *(column(c.name, c.type) for c in usage_ledger.c if c.name != "attempt")
)


def _primary_key(database_url: str) -> list[str]:
    engine = make_engine(database_url)
    try:
        return list(inspect(engine).get_pk_constraint("usage_ledger")["constrained_columns"])
    finally:
        engine.dispose()


def _billed_job(engine, owner: str, job_id: str, attempts: int) -> None:
    """A job at ``attempts`` with the ledger row revision 0011 wrote (no attempt column); the
    database is at 0011 (the job was inserted before the downgrade)."""
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(attempts=attempts))
        conn.execute(
            insert(LEDGER_0011).values(
                job_id=job_id, owner_id=owner, model="m", status="succeeded", prompt_tokens=5,
                completion_tokens=1, images=1, cost_input=0, cost_output=0, cost_images=0,
                cost_total=0, currency="USD", price={}, billed_at=T0, billed_on=T0.date(),
            )
        )  # fmt: skip


def test_migration_0012_keys_the_ledger_by_job_and_attempt(database_url):
    assert _primary_key(database_url) == ["job_id", "attempt"]
    assert schema_diffs(database_url) == []


def test_migration_0012_numbers_existing_rows_by_their_jobs_attempt(database_url):
    engine = make_engine(database_url)
    try:
        owner = new_key(engine, "k", at=T0).id
        insert_job(sql_job_store(engine), owner, T0, job_id="job_a")
        command.downgrade(alembic_config(database_url), "0011")
        _billed_job(engine, owner, "job_a", attempts=2)
        upgrade_to_head(database_url)
        with engine.connect() as conn:
            row = conn.execute(select(usage_ledger.c.job_id, usage_ledger.c.attempt)).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("job_a", 2)
    assert _primary_key(database_url) == ["job_id", "attempt"]


def test_migration_0012_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0011")
    assert _primary_key(database_url) == ["job_id"]
    upgrade_to_head(database_url)
    assert _primary_key(database_url) == ["job_id", "attempt"]


def test_migration_0012_downgrade_is_refused_while_a_job_has_two_billed_attempts(database_url):
    engine = make_engine(database_url)
    try:
        owner = new_key(engine, "k", at=T0).id
        insert_job(sql_job_store(engine), owner, T0, job_id="job_r")
        with engine.begin() as conn:
            for attempt in (1, 2):
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == "job_r")
                    .values(attempts=attempt, prompt_tokens=5, completion_tokens=1)
                )
                record_usage(conn, "job_r", T0)
    finally:
        engine.dispose()
    with pytest.raises(RuntimeError, match="job_r is billed for more than one attempt"):
        command.downgrade(alembic_config(database_url), "0011")
    assert _primary_key(database_url) == ["job_id", "attempt"]
