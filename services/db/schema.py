"""Table definitions (SQLAlchemy Core). Alembic migrations under ``migrations/`` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
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
    Column("expires_at", UTCDateTime(), nullable=True),  # None: never expires
    # Written at most once a minute per key (see services/auth/keys.py), not per request.
    Column("last_used_at", UTCDateTime(), nullable=True),
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
    Column("priority", String(8), nullable=False, server_default="normal"),
    # A queued job not started by then ends ``expired`` (``ttl_seconds`` at submit).
    Column("expires_at", UTCDateTime(), nullable=True),
    # Unique per key (NULLs never collide): the same key and body replays the original job.
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=True),
    # Set when retention removed the job's images and output.
    Column("data_removed_at", UTCDateTime(), nullable=True),
    # Attempts that ended with their lease lapsed (LOUPE_MAX_ATTEMPTS caps them; migration 0009).
    Column("lost_attempts", Integer(), nullable=False, server_default="0"),
    # When the job last became queued again (NULL: at created_at), and its queue time so far:
    # a re-run's queue time never includes its time on a dead worker.
    Column("queued_at", UTCDateTime(), nullable=True),
    Column("queue_seconds", Float(), nullable=True),
    Index("ix_jobs_owner_created", "owner_id", "created_at"),
    Index("ix_jobs_status", "status"),
    Index("ux_jobs_owner_idempotency", "owner_id", "idempotency_key", unique=True),
    Index("ix_jobs_owner_status_created", "owner_id", "status", "created_at"),
    Index("ix_jobs_completed", "completed_at"),
    # Admin monitoring: oldest queued job per priority (services/admin/sql_stats.py).
    Index("ix_jobs_status_priority_created", "status", "priority", "created_at"),
)


# --- Usage accounting and quotas (migration 0004) -------------------------------------------

MONEY_SCALE = 10  # decimal places kept for money: 1e-10 USD, the pricing quantum


class Money(TypeDecorator[Decimal]):
    """Exact USD amounts stored as a BIGINT count of 1e-10 USD.

    Integers are exact and ``SUM``-able on every backend (SQLite has no exact decimal type);
    an amount with more than ``MONEY_SCALE`` decimals is refused, never silently rounded.
    """

    impl = BigInteger()
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        units = Decimal(value).scaleb(MONEY_SCALE)
        if units != units.to_integral_value():
            raise ValueError(f"{value} has more than {MONEY_SCALE} decimal places")
        return int(units)

    def process_result_value(self, value: object, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # SUM() comes back as int (SQLite) or Decimal (PostgreSQL numeric): both exact.
        return Decimal(str(value)).scaleb(-MONEY_SCALE).normalize()


# Set when a job reaches a terminal status: True if it has a usage_ledger row (it is charged).
jobs.append_column(Column("billed", Boolean(), nullable=True))
# The up-front estimate made at submit: prompt tokens (an upper bound) and the maximum cost.
jobs.append_column(Column("estimated_prompt_tokens", Integer(), nullable=True))
jobs.append_column(Column("estimated_cost_max", Money(), nullable=True))

usage_ledger = Table(
    "usage_ledger",
    metadata,
    # One row per billed attempt (migration 0012): a redelivered message or a racing finish
    # cannot bill an attempt twice, and a job retried after a billed failure (POST
    # /v1/jobs/{id}/retry) pays for each attempt that did work.
    Column("job_id", String(40), primary_key=True),
    Column("attempt", Integer(), primary_key=True, autoincrement=False),
    Column("owner_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("prompt_tokens", Integer(), nullable=False),
    Column("completion_tokens", Integer(), nullable=False),
    Column("images", Integer(), nullable=False),
    Column("cost_input", Money(), nullable=False),
    Column("cost_output", Money(), nullable=False),
    Column("cost_images", Money(), nullable=False),
    Column("cost_total", Money(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("price", JSON(), nullable=False),  # the card the job was priced with
    Column("billed_at", UTCDateTime(), nullable=False),
    Column("billed_on", Date(), nullable=False),  # UTC day of billed_at, for group_by=day
    Index("ix_usage_owner_billed_on", "owner_id", "billed_on"),
    Index("ix_usage_billed_on", "billed_on"),
)

key_quotas = Table(
    "key_quotas",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id"), primary_key=True),
    # NULL means unlimited.
    Column("monthly_spend_usd", Money(), nullable=True),
    Column("max_queued", Integer(), nullable=True),
    Column("max_running", Integer(), nullable=True),
    Column("requests_per_minute", Integer(), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# --------------------------------------------------------------------------- webhooks (0005)
# A job's webhook target and which events it asked for (``["completed"]`` by default).
jobs.append_column(Column("webhook_url", String(2048), nullable=True))
jobs.append_column(Column("webhook_events", JSON(), nullable=True))

# One signing secret per API key. Stored in plaintext on purpose: HMAC needs the secret itself
# and ``GET /v1/webhook-secret`` must show it to its owner (as Svix and Stripe do); protect the
# database like the broker. During a rotation overlap the previous secret also signs.
webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("owner_id", String(40), ForeignKey("api_keys.id"), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("previous_secret", String(128), nullable=True),
    Column("previous_expires_at", UTCDateTime(), nullable=True),
)

# One row per (job, event type): its ``webhook-id`` and the exact payload, kept for redelivery.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("owner_id", String(40), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("payload", JSON(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # pending → delivered | failed; a redelivery puts it back to pending.
    Column("state", String(16), nullable=False),
    # First attempt number of the current run (1, or the attempt a redelivery started at):
    # the retry schedule is counted from it.
    Column("run_first_attempt", Integer(), nullable=False, server_default="1"),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Index("ux_webhook_events_job_type", "job_id", "event_type", unique=True),
)

# Every delivery attempt. The row is inserted before the POST (it is the claim that stops a
# duplicated task message from posting twice) and completed after it.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "event_id",
        String(40),
        ForeignKey("webhook_events.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("attempt", Integer(), primary_key=True, autoincrement=False),
    Column("attempted_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("http_status", Integer(), nullable=True),
    Column("latency_ms", Integer(), nullable=True),
    Column("error", Text(), nullable=True),
    Column("response_body", Text(), nullable=True),  # the first 1 KB
)

# --------------------------------------------------------------------------- uploaded files (0007)
# An image uploaded once (POST /v1/files) and named by id in later jobs. The bytes live in the
# object store under their SHA-256, like every job image.
files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("filename", String(255), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("content_type", String(64), nullable=False),
    Column("size_bytes", Integer(), nullable=False),
    Column("width", Integer(), nullable=False),
    Column("height", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_files_owner_created", "owner_id", "created_at"),
    Index("ix_files_sha256", "sha256"),
    Index("ix_files_created", "created_at"),
)

# --------------------------------------------------------------------------- dispatch (0010)
# SQL is the queue of record: a queued job with ``dispatched_at`` NULL waits in the backlog; set,
# the dispatcher handed it to the broker (a short buffer) at that time.
jobs.append_column(Column("dispatched_at", UTCDateTime(), nullable=True))
# The status a job was retried from (POST /v1/jobs/{id}/retry); NULL: never retried.
jobs.append_column(Column("retried_from_status", String(16), nullable=True))
# The dispatcher's candidates: queued jobs of a model, by priority, key and age; and its
# buffer: ``dispatched_at`` is set only between dispatch and claim, so that index stays small.
Index(
    "ix_jobs_dispatch",
    jobs.c.status,
    jobs.c.model,
    jobs.c.priority,
    jobs.c.owner_id,
    jobs.c.created_at,
)
Index("ix_jobs_dispatched", jobs.c.dispatched_at)
# Jobs of a key in flight (handed to the broker or running) at once; NULL: no limit.
key_quotas.append_column(Column("max_concurrency", Integer(), nullable=True))

# A named lease held by one process at a time (the active dispatcher), renewed while it lives.
service_leases = Table(
    "service_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# ------------------------------------------------------------------------- webhook schedule (0011)
# Webhook retries are scheduled here, not in the broker: beat's sweep publishes every pending
# event whose ``next_attempt_at`` has come (services/webhooks/dispatch.py). ``dispatched_until``:
# an attempt of the event is out (its message published, or its POST claimed) and the sweep
# leaves the event alone until then; NULL: nothing is out.
webhook_events.append_column(Column("dispatched_until", UTCDateTime(), nullable=True))
# The sweep's query, every few seconds: pending events by due time, without reading the rest.
Index("ix_webhook_events_due", webhook_events.c.state, webhook_events.c.next_attempt_at)

# --------------------------------------------------------------------------- retries (0013)
# The ttl_seconds the job was submitted with (NULL: none): a retry's new deadline is its time
# plus this, since after one retry ``expires_at - created_at`` no longer gives it back.
jobs.append_column(Column("ttl_seconds", Integer(), nullable=True))
