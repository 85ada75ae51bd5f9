"""AutoML runs: what was asked (a dataset version, a target, a budget) and what came out.

The run's job (`automl.train`) is the source of truth for its state and progress; the run row
keeps the request and, as the search goes, its leaderboard, then the final results.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.db import Base, UTCDateTime
from atelier.core.ids import new_id


class AutomlRun(Base):
    __tablename__ = "automl_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("run"))
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # The data it learned from; kept by value too, so a run outlives its dataset's deletion.
    dataset_id: Mapped[str] = mapped_column(String(40))
    dataset_version: Mapped[int] = mapped_column(Integer)
    dataset_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL")
    )
    dataset_name: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(200))
    task: Mapped[str | None] = mapped_column(String(16))  # None until detected
    metric: Mapped[str | None] = mapped_column(String(32))
    budget_seconds: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    exclude: Mapped[list[str]] = mapped_column(JSON)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    # The request as validated (for a repeated Idempotency-Key: the same request or a 409).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    leaderboard: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # set when the search ends
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # `automl.report` document
    # The model folder (`automl.artifacts`) as a zip, once the run has succeeded.
    model_blob_id: Mapped[str | None] = mapped_column(
        ForeignKey("stored_blobs.id", ondelete="SET NULL")
    )
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
