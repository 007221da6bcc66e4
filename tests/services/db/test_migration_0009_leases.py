"""Migration 0009 (lost attempts, queue time across re-runs) matches the schema and downgrades
cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command

from services.db import upgrade_to_head
from services.db.migrate import alembic_config
from tests.support.migrations import columns, schema_diffs

NEW = {"lost_attempts", "queued_at", "queue_seconds"}


def test_migration_0009_adds_what_the_schema_declares(database_url):
    assert columns(database_url, "jobs") >= NEW
    assert schema_diffs(database_url) == []


def test_migration_0009_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0008")
    assert not NEW & columns(database_url, "jobs")
    upgrade_to_head(database_url)
    assert columns(database_url, "jobs") >= NEW
