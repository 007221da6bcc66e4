"""Admin monitoring: index for the oldest queued job per priority.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # MIN(created_at) WHERE status = 'queued' AND priority = ? becomes one index seek, and the
    # count by status a scan of this index alone: /metrics stays cheap with a deep queue.
    op.create_index("ix_jobs_status_priority_created", "jobs", ["status", "priority", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_priority_created", table_name="jobs")
