"""Migration 0008 (key expiry, last use) matches the schema and downgrades cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.db import make_engine, upgrade_to_head
from services.db.migrate import alembic_config
from services.db.schema import metadata

NEW = {"expires_at", "last_used_at"}


def _columns(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("api_keys")}
    finally:
        engine.dispose()


def _api_keys_diffs(database_url: str) -> list:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    return [d for d in diffs if "api_keys" in repr(d)]


def test_migration_0008_adds_what_the_schema_declares(database_url):
    assert _columns(database_url) >= NEW
    assert _api_keys_diffs(database_url) == []


def test_migration_0008_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0007")
    assert not NEW & _columns(database_url)
    upgrade_to_head(database_url)
    assert _columns(database_url) >= NEW
