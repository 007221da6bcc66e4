"""Migration 0004 (usage ledger, quotas) matches the schema and downgrades cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.db import make_engine, upgrade_to_head
from services.db.migrate import alembic_config
from services.db.schema import metadata

USAGE_TABLES = {"usage_ledger", "key_quotas"}
USAGE_JOB_COLUMNS = {"billed", "estimated_prompt_tokens", "estimated_cost_max"}


def _usage_diffs(engine) -> list:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    flat = [d for diff in diffs for d in (diff if isinstance(diff, list) else [diff])]
    return [d for d in flat if USAGE_TABLES & {str(x) for x in d} or any(
        getattr(x, "name", None) in USAGE_JOB_COLUMNS | USAGE_TABLES for x in d)]  # fmt: skip


def test_migration_0004_creates_what_the_schema_declares(database_url):
    engine = make_engine(database_url)
    try:
        assert _usage_diffs(engine) == []
        names = inspect(engine).get_table_names()
        assert set(names) >= USAGE_TABLES
    finally:
        engine.dispose()


def test_migration_0004_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0003")
    engine = make_engine(database_url)
    try:
        inspector = inspect(engine)
        assert not USAGE_TABLES & set(inspector.get_table_names())
        assert not USAGE_JOB_COLUMNS & {c["name"] for c in inspector.get_columns("jobs")}
    finally:
        engine.dispose()
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= USAGE_TABLES
    finally:
        engine.dispose()
