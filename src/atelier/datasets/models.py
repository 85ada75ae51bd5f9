"""Datasets and their versions.

A dataset is a name in an organization; each upload to it is a new immutable version holding
the file as sent, a canonical Parquet copy (what training reads), the detected format, the
inferred schema, a profile and the schema's differences from the previous version. Both files
are stored blobs (`storage`), so they count against the plan's storage.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from atelier.core.db import Base, UTCDateTime
from atelier.core.ids import new_id


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    versions: Mapped[list["DatasetVersion"]] = relationship(
        back_populates="dataset",
        order_by="DatasetVersion.number",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dsv"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    number: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))  # as the client named it; display only
    format: Mapped[str] = mapped_column(String(16))
    format_details: Mapped[dict[str, Any]] = mapped_column(JSON)
    original_blob_id: Mapped[str] = mapped_column(ForeignKey("stored_blobs.id"))
    parquet_blob_id: Mapped[str] = mapped_column(ForeignKey("stored_blobs.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # of the original file
    rows: Mapped[int] = mapped_column(BigInteger)
    columns: Mapped[int] = mapped_column(Integer)
    schema: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema_diff: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # against number - 1
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")
