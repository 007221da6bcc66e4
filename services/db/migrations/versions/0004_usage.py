"""Usage accounting and quotas: usage_ledger, key_quotas, and the job's billing columns.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from services.db.schema import Money, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("billed", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("estimated_prompt_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("estimated_cost_max", Money(), nullable=True))
    op.create_table(
        "usage_ledger",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("cost_input", Money(), nullable=False),
        sa.Column("cost_output", Money(), nullable=False),
        sa.Column("cost_images", Money(), nullable=False),
        sa.Column("cost_total", Money(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("price", sa.JSON(), nullable=False),
        sa.Column("billed_at", UTCDateTime(), nullable=False),
        sa.Column("billed_on", sa.Date(), nullable=False),
    )
    op.create_index("ix_usage_owner_billed_on", "usage_ledger", ["owner_id", "billed_on"])
    op.create_index("ix_usage_billed_on", "usage_ledger", ["billed_on"])
    op.create_table(
        "key_quotas",
        sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("monthly_spend_usd", Money(), nullable=True),
        sa.Column("max_queued", sa.Integer(), nullable=True),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_quotas")
    op.drop_index("ix_usage_billed_on", "usage_ledger")
    op.drop_index("ix_usage_owner_billed_on", "usage_ledger")
    op.drop_table("usage_ledger")
    with op.batch_alter_table("jobs") as batch:
        for column in ("estimated_cost_max", "estimated_prompt_tokens", "billed"):
            batch.drop_column(column)
