"""Jobs keep the ttl_seconds they were submitted with, for a retry to set a new deadline.

A retried job (``POST /v1/jobs/{id}/retry``) gets ``expires_at = retry time + its ttl``; after
that, ``expires_at - created_at`` no longer gives the ttl back, so it is stored. Jobs submitted
before this revision were never retried: their ttl is exactly their deadline minus their creation.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Each job's ttl: its deadline minus its creation, in whole seconds.
_BACKFILL = {
    "postgresql": "UPDATE jobs SET ttl_seconds = CAST(ROUND("
    "EXTRACT(EPOCH FROM (expires_at - created_at))) AS INTEGER) WHERE expires_at IS NOT NULL",
    "sqlite": "UPDATE jobs SET ttl_seconds = CAST(ROUND("
    "(julianday(expires_at) - julianday(created_at)) * 86400) AS INTEGER) "
    "WHERE expires_at IS NOT NULL",
}


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("ttl_seconds", sa.Integer(), nullable=True))
    op.execute(_BACKFILL[op.get_bind().dialect.name])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("ttl_seconds")
