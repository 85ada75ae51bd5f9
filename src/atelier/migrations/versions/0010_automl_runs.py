"""AutoML runs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "automl_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_version", sa.Integer(), nullable=False),
        sa.Column("dataset_version_id", sa.String(length=40), nullable=True),
        sa.Column("dataset_name", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("task", sa.String(length=16), nullable=True),
        sa.Column("metric", sa.String(length=32), nullable=True),
        sa.Column("budget_seconds", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("exclude", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("leaderboard", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("model_blob_id", sa.String(length=40), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_automl_runs_dataset_version_id_dataset_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_blob_id"],
            ["stored_blobs.id"],
            name=op.f("fk_automl_runs_model_blob_id_stored_blobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_automl_runs_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automl_runs")),
    )
    with op.batch_alter_table("automl_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_automl_runs_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_automl_runs_org_id"), ["org_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("automl_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_automl_runs_org_id"))
        batch_op.drop_index(batch_op.f("ix_automl_runs_job_id"))

    op.drop_table("automl_runs")
