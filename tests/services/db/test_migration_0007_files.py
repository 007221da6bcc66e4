"""Migration 0007 (uploaded files) matches the schema and downgrades cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.db import make_engine, upgrade_to_head
from services.db.migrate import alembic_config
from services.db.schema import metadata


def _files_diffs(engine) -> list:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    flat = [d for diff in diffs for d in (diff if isinstance(diff, list) else [diff])]
    return [d for d in flat if "files" in {str(getattr(x, "name", x)) for x in d}
            or any(getattr(getattr(x, "table", None), "name", None) == "files" for x in d)]  # fmt: skip


def test_migration_0007_creates_what_the_schema_declares(database_url):
    engine = make_engine(database_url)
    try:
        assert _files_diffs(engine) == []
        indexes = {i["name"] for i in inspect(engine).get_indexes("files")}
        assert indexes == {"ix_files_owner_created", "ix_files_sha256", "ix_files_created"}
    finally:
        engine.dispose()


def test_migration_0007_downgrades_and_upgrades_again(database_url):
    command.downgrade(alembic_config(database_url), "0006")
    engine = make_engine(database_url)
    try:
        assert "files" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        assert "files" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
