"""SQL as the queue of record: dispatch state, per-key concurrency, retries, dispatcher lease.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from services.db.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dispatched_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("retried_from_status", sa.String(16), nullable=True))
        batch.create_index(
            "ix_jobs_dispatch", ["status", "model", "priority", "owner_id", "created_at"]
        )
        batch.create_index("ix_jobs_dispatched", ["dispatched_at"])
    with op.batch_alter_table("key_quotas") as batch:
        batch.add_column(sa.Column("max_concurrency", sa.Integer(), nullable=True))
    op.create_table(
        "service_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_leases")
    with op.batch_alter_table("key_quotas") as batch:
        batch.drop_column("max_concurrency")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_dispatched")
        batch.drop_index("ix_jobs_dispatch")
        batch.drop_column("retried_from_status")
        batch.drop_column("dispatched_at")
