"""Waiting jobs indexed by queue, then organization, then age.

A release chooses among each organization's first waiting jobs of a queue. Through
`ix_jobs_waiting` (queue, age) it read and sorted the whole backlog for that: with 10,000 jobs
waiting, 25 ms a release with statistics and 69 ms on a young table (`bench/release.py`).
Through this index it finds the organizations with waiting jobs one after the other and reads
only each one's first jobs, in order (`jobs.statements.RELEASE_PG`): 3 and 14 ms. The index
also answers "is anything waiting in this queue?", the old one's other use, so it replaces it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = sa.text("status = 'queued' AND dispatched_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_waiting", sqlite_where=WAITING, postgresql_where=WAITING)
        batch_op.create_index(
            "ix_jobs_waiting_by_org",
            ["queue", "org_id", "created_at", "id"],
            unique=False,
            sqlite_where=WAITING,
            postgresql_where=WAITING,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index(
            "ix_jobs_waiting_by_org", sqlite_where=WAITING, postgresql_where=WAITING
        )
        batch_op.create_index(
            "ix_jobs_waiting",
            ["queue", "created_at"],
            unique=False,
            sqlite_where=WAITING,
            postgresql_where=WAITING,
        )
