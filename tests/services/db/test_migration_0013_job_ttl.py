"""Migration 0013 (the ttl a job was submitted with) matches the schema, gives jobs submitted
before it their ttl back from their deadline, and downgrades; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import select

from services.db import make_engine, upgrade_to_head
from services.db.migrate import alembic_config
from services.db.schema import jobs
from tests.support.jobs import insert_job
from tests.support.keys import new_key
from tests.support.migrations import columns, schema_diffs
from tests.support.stores import sql_job_store

T0 = datetime(2026, 11, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def _ttls(engine) -> dict[str, int | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(jobs.c.id, jobs.c.ttl_seconds)).all())


def test_migration_0013_adds_what_the_schema_declares(database_url):
    assert "ttl_seconds" in columns(database_url, "jobs")
    assert schema_diffs(database_url) == []


def test_migration_0013_backfills_the_ttl_of_earlier_jobs_and_downgrades(database_url):
    engine = make_engine(database_url)
    try:
        store = sql_job_store(engine)
        owner = new_key(engine, "k", at=T0).id
        insert_job(store, owner, T0, job_id="job_ttl", expires_at=T0 + timedelta(seconds=90))
        insert_job(store, owner, T0, job_id="job_none")
        assert _ttls(engine) == {"job_ttl": 90, "job_none": None}  # written at submit
        command.downgrade(alembic_config(database_url), "0012")
        assert "ttl_seconds" not in columns(database_url, "jobs")
        upgrade_to_head(database_url)
        assert _ttls(engine) == {"job_ttl": 90, "job_none": None}  # from the deadline
    finally:
        engine.dispose()
