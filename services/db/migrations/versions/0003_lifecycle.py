"""Job lifecycle controls: priority, queue TTL, idempotency keys, data retention.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from services.db.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("priority", sa.String(8), nullable=False, server_default="normal")
        )
        batch.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("data_removed_at", UTCDateTime(), nullable=True))
        batch.create_index(
            "ux_jobs_owner_idempotency", ["owner_id", "idempotency_key"], unique=True
        )
        batch.create_index("ix_jobs_owner_status_created", ["owner_id", "status", "created_at"])
        batch.create_index("ix_jobs_completed", ["completed_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_completed")
        batch.drop_index("ix_jobs_owner_status_created")
        batch.drop_index("ux_jobs_owner_idempotency")
        for column in (
            "data_removed_at", "request_hash", "idempotency_key", "expires_at", "priority"
        ):  # fmt: skip
            batch.drop_column(column)
