"""Jobs, their log lines, and the plans' job priority and waiting-jobs cap.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# (plan, job priority, jobs allowed to wait for a slot; None: the built-in cap)
SEED_JOB_LIMITS = (
    ("trial", 0, 20),
    ("free", 0, 10),
    ("pro", 10, 200),
    ("enterprise", 20, None),
)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("progress_message", sa.String(length=500), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("compute_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_jobs_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint(
            "org_id", "idempotency_key", name=op.f("uq_jobs_org_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_org_created", ["org_id", "created_at"], unique=False)
        batch_op.create_index("ix_jobs_status_queue", ["status", "queue"], unique=False)
        batch_op.create_index(
            "ix_jobs_waiting",
            ["queue", "created_at"],
            unique=False,
            sqlite_where=sa.text("status = 'queued' AND dispatched_at IS NULL"),
            postgresql_where=sa.text("status = 'queued' AND dispatched_at IS NULL"),
        )

    op.create_table(
        "job_log_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_log_lines_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_log_lines")),
    )
    with op.batch_alter_table("job_log_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_log_lines_job_id"), ["job_id"], unique=False)

    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("job_priority", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("max_waiting_jobs", sa.Integer(), nullable=True))

    # Paying plans go first when organizations wait for job slots, and may keep more waiting.
    plans = sa.table(
        "plans",
        sa.column("id", sa.String),
        sa.column("job_priority", sa.Integer),
        sa.column("max_waiting_jobs", sa.Integer),
    )
    for plan_id, priority, max_waiting in SEED_JOB_LIMITS:
        op.execute(
            plans.update()
            .where(plans.c.id == plan_id)
            .values(job_priority=priority, max_waiting_jobs=max_waiting)
        )


def downgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_column("max_waiting_jobs")
        batch_op.drop_column("job_priority")

    with op.batch_alter_table("job_log_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_log_lines_job_id"))

    op.drop_table("job_log_lines")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_jobs_waiting",
            sqlite_where=sa.text("status = 'queued' AND dispatched_at IS NULL"),
            postgresql_where=sa.text("status = 'queued' AND dispatched_at IS NULL"),
        )
        batch_op.drop_index("ix_jobs_status_queue")
        batch_op.drop_index("ix_jobs_org_created")

    op.drop_table("jobs")
