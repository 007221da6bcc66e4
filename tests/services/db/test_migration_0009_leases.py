"""Migration 0009 (lost attempts, queue time across re-runs) matches the schema and downgrades
cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.db import make_engine, upgrade_to_head
from services.db.migrate import alembic_config
from services.db.schema import metadata

NEW = {"lost_attempts", "queued_at", "queue_seconds"}


def _columns(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()


def _jobs_diffs(database_url: str) -> list:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    return [d for d in diffs if "'jobs'" in repr(d) or "jobs." in repr(d)]


def test_migration_0009_adds_what_the_schema_declares(database_url):
    assert _columns(database_url) >= NEW
    assert _jobs_diffs(database_url) == []


def test_migration_0009_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0008")
    assert not NEW & _columns(database_url)
    upgrade_to_head(database_url)
    assert _columns(database_url) >= NEW
