"""The dispatcher's indexes hold active jobs only (PostgreSQL).

`ix_jobs_status_queue` and `ix_jobs_org_status` indexed every job ever: each job's end added
an entry to both, and on a young table (no statistics yet) PostgreSQL walked an organization's
whole history through `ix_jobs_org_created` to count its jobs in flight (auto_explain: 1,769
rows removed by the filter, for one finish). Their replacements are partial indexes over
queued and running jobs; the queries that count spell the statuses out, so the planner can use
them. SQLite keeps them whole (it matches a partial index only on the same IN list).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_status_queue")
        batch_op.drop_index("ix_jobs_org_status")
        batch_op.create_index(
            "ix_jobs_queue_active",
            ["status", "queue", "dispatched_at"],
            unique=False,
            postgresql_where=ACTIVE,
        )
        batch_op.create_index(
            "ix_jobs_org_active",
            ["org_id", "status", "dispatched_at"],
            unique=False,
            postgresql_where=ACTIVE,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_org_active")
        batch_op.drop_index("ix_jobs_queue_active")
        batch_op.create_index(
            "ix_jobs_status_queue", ["status", "queue", "dispatched_at"], unique=False
        )
        batch_op.create_index(
            "ix_jobs_org_status", ["org_id", "status", "dispatched_at"], unique=False
        )
