"""What a migrated database holds, for the migration tests."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.db import make_engine
from services.db.schema import metadata


def columns(database_url: str, table: str) -> set[str]:
    """The column names ``table`` has in the database."""
    engine = make_engine(database_url)
    try:
        return {column["name"] for column in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def schema_diffs(database_url: str) -> list[Any]:
    """Every difference between the database and ``services.db.schema`` (empty at head)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()
