"""Webhook retries scheduled in SQL: who has an attempt out, and the sweep's index.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from services.db.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("dispatched_until", UTCDateTime(), nullable=True))
    # Beat's sweep looks for due pending events every few seconds: an index seek, not a scan of
    # every event ever sent (delivered and failed events are most of the table).
    op.create_index("ix_webhook_events_due", "webhook_events", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_due", table_name="webhook_events")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("dispatched_until")
