"""Stored blobs, and the garbage collector's sightings of orphan objects.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "blob_orphan_sightings",
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_blob_orphan_sightings")),
    )
    op.create_table(
        "stored_blobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_blobs")),
        sa.UniqueConstraint("key", name=op.f("uq_stored_blobs_key")),
    )
    with op.batch_alter_table("stored_blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stored_blobs_org_id"), ["org_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("stored_blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stored_blobs_org_id"))

    op.drop_table("stored_blobs")
    op.drop_table("blob_orphan_sightings")
