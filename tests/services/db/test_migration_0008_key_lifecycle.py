"""Migration 0008 (key expiry, last use) matches the schema and downgrades cleanly."""

from __future__ import annotations

from alembic import command

from services.db import upgrade_to_head
from services.db.migrate import alembic_config
from tests.support.migrations import columns, schema_diffs

NEW = {"expires_at", "last_used_at"}


def test_migration_0008_adds_what_the_schema_declares(database_url):
    assert columns(database_url, "api_keys") >= NEW
    assert schema_diffs(database_url) == []


def test_migration_0008_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0007")
    assert not NEW & columns(database_url, "api_keys")
    upgrade_to_head(database_url)
    assert columns(database_url, "api_keys") >= NEW
