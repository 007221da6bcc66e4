"""Webhooks: a job's webhook target, per-key signing secrets, events and delivery attempts.

Revision ID: 0005
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from services.db.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("webhook_events", sa.JSON(), nullable=True))
    # Secrets are stored in plaintext: they sign with HMAC and are shown to their owner.
    op.create_table(
        "webhook_secrets",
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        sa.Column("previous_expires_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("run_first_attempt", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "ux_webhook_events_job_type", "webhook_events", ["job_id", "event_type"], unique=True
    )
    op.create_table(
        "webhook_attempts",
        sa.Column(
            "event_id",
            sa.String(40),
            sa.ForeignKey("webhook_events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("attempted_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_index("ux_webhook_events_job_type", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_table("webhook_secrets")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_events")
        batch.drop_column("webhook_url")
