"""Registered models and their versions.

A model is a name in an organization; each version is an immutable folder (stored as one zip
blob): the fitted model (`model.skops` or `model.onnx`, and `model.onnx` again as an export of an
AutoML model where it converts), `signature.json`, `lineage.json`, `MODEL_CARD.md`, and an AutoML
run's report. The row keeps what lists and the UI show without opening the zip.

A version's stage moves between `none`, `staging`, `production` and `archived`; a partial unique
index keeps at most one production version per model, whatever two requests race to do.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from atelier.core.db import Base, UTCDateTime
from atelier.core.ids import new_id

STAGES = ("none", "staging", "production", "archived")
SOURCES = ("automl", "upload")
FORMATS = ("atelier", "skops", "onnx")


class RegisteredModel(Base):
    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(2000))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    versions: Mapped[list["ModelVersion"]] = relationship(
        back_populates="model",
        order_by="ModelVersion.number",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "number"),
        Index(
            "uq_model_versions_one_production",
            "model_id",
            unique=True,
            sqlite_where=text("stage = 'production'"),
            postgresql_where=text("stage = 'production'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mv"))
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    number: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(16), default="none")
    source: Mapped[str] = mapped_column(String(16))  # SOURCES
    format: Mapped[str] = mapped_column(String(16))  # FORMATS: how model.* is to be read
    description: Mapped[str | None] = mapped_column(String(2000))
    # Where it came from, kept by value so a version outlives its run and its dataset.
    run_id: Mapped[str | None] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    dataset_version: Mapped[int | None] = mapped_column(Integer)
    task: Mapped[str | None] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(200))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The ONNX export of an AutoML model: whether there is one, and why not when there is not.
    onnx_export: Mapped[bool] = mapped_column(default=False)
    onnx_note: Mapped[str | None] = mapped_column(String(2000))
    blob_id: Mapped[str] = mapped_column(ForeignKey("stored_blobs.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the model file itself
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stage_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stage_changed_by: Mapped[str | None] = mapped_column(String(40))

    model: Mapped[RegisteredModel] = relationship(back_populates="versions")
