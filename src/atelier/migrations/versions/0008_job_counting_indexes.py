"""Indexes that keep the dispatcher's counts proportional to active jobs, not to history.

Counting an organization's jobs in flight walked all its jobs ever (`ix_jobs_org_created`), and
counting a queue's handed-over jobs walked its waiting ones too: every submit slowed as the
table grew. Both counts now range-scan (status, dispatched_at) within the organization or queue.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_status_queue")
        batch_op.create_index(
            "ix_jobs_status_queue", ["status", "queue", "dispatched_at"], unique=False
        )
        batch_op.create_index(
            "ix_jobs_org_status", ["org_id", "status", "dispatched_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_org_status")
        batch_op.drop_index("ix_jobs_status_queue")
        batch_op.create_index("ix_jobs_status_queue", ["status", "queue"], unique=False)
