"""The usage ledger keeps one row per billed attempt: its key becomes (job_id, attempt).

A job retried after a billed failure (``POST /v1/jobs/{id}/retry``) runs again under the same id;
its second finish must get a row of its own, and a redelivered finish of one attempt still none.
Rows written before this revision belong to the attempt their job is at now.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# PostgreSQL's name for the key created with the table; kept the same after the change.
PRIMARY_KEY = "usage_ledger_pkey"


def upgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE usage_ledger SET attempt = COALESCE("
        "(SELECT jobs.attempts FROM jobs WHERE jobs.id = usage_ledger.job_id), 1)"
    )
    _attempt_in_primary_key()


def downgrade() -> None:
    """Refused while a job has rows for two attempts: one row per job would lose money."""
    repeated = (
        op.get_bind()
        .execute(
            sa.text("SELECT job_id FROM usage_ledger GROUP BY job_id HAVING COUNT(*) > 1 LIMIT 1")
        )
        .first()
    )
    if repeated is not None:
        raise RuntimeError(
            f"cannot downgrade below 0012: job {repeated[0]} is billed for more than one "
            "attempt, and revision 0011 keeps one ledger row per job"
        )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(PRIMARY_KEY, "usage_ledger", type_="primary")
        op.create_primary_key(PRIMARY_KEY, "usage_ledger", ["job_id"])
    with op.batch_alter_table("usage_ledger") as batch:
        # SQLite: the table is copied without the column, its key falling back to job_id.
        batch.drop_column("attempt")


def _attempt_in_primary_key() -> None:
    """Add ``attempt`` to the key. SQLite cannot alter a key: batch mode copies the table there
    (indexes and all), the key given as column flags; PostgreSQL drops and adds the key."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(PRIMARY_KEY, "usage_ledger", type_="primary")
        op.alter_column("usage_ledger", "attempt", nullable=False)
        op.create_primary_key(PRIMARY_KEY, "usage_ledger", ["job_id", "attempt"])
        return
    flagged = [
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True, autoincrement=False),
    ]
    with op.batch_alter_table("usage_ledger", recreate="always", reflect_args=flagged):
        pass
