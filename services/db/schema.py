"""Table definitions (SQLAlchemy Core). Alembic migrations under ``migrations/`` create them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("messages", JSON(), nullable=False),
    Column("images", JSON(), nullable=False),
    Column("params", JSON(), nullable=False),
    Column("price", JSON(), nullable=False),
    Column("metadata", JSON(), nullable=False),
    Column("timeout_seconds", Integer(), nullable=False),
    Column("attempts", Integer(), nullable=False, default=0),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("cancel_requested_at", UTCDateTime(), nullable=True),
    Column("output_text", Text(), nullable=True),
    Column("finish_reason", String(32), nullable=True),
    Column("prompt_tokens", Integer(), nullable=True),
    Column("completion_tokens", Integer(), nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text(), nullable=True),
    Index("ix_jobs_owner_created", "owner_id", "created_at"),
    Index("ix_jobs_status", "status"),
)
