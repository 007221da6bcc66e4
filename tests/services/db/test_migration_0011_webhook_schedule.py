"""Migration 0011 (webhook retries scheduled in SQL) matches the schema and downgrades cleanly,
on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from services.db import make_engine, upgrade_to_head
from services.db.migrate import alembic_config
from tests.support.migrations import columns, schema_diffs


def _indexes(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return {index["name"] for index in inspect(engine).get_indexes("webhook_events")}
    finally:
        engine.dispose()


def test_migration_0011_adds_what_the_schema_declares(database_url):
    assert "dispatched_until" in columns(database_url, "webhook_events")
    assert "ix_webhook_events_due" in _indexes(database_url)
    assert schema_diffs(database_url) == []


def test_migration_0011_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0010")
    assert "dispatched_until" not in columns(database_url, "webhook_events")
    assert "ix_webhook_events_due" not in _indexes(database_url)
    upgrade_to_head(database_url)
    assert "dispatched_until" in columns(database_url, "webhook_events")
