"""What the AutoML API reads and writes."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier.jobs.schemas import JobRead

Task = Literal["binary", "multiclass", "regression"]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=40)
    version: int | None = Field(
        default=None, ge=1, description="The dataset version; default: the latest."
    )
    target: str = Field(min_length=1, max_length=200, description="The column to predict.")
    task: Task | None = Field(default=None, description="Default: detected from the target.")
    metric: str | None = Field(
        default=None,
        max_length=32,
        description="Default: roc_auc (binary), log_loss (multiclass), rmse (regression).",
    )
    budget_seconds: int | None = Field(
        default=None, ge=10, description="How long the search may take; default 60 s."
    )
    exclude: list[str] = Field(
        default_factory=list, max_length=2000, description="Columns to leave out."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class RunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    dataset_version: int
    dataset_name: str
    target: str
    task: str | None
    metric: str | None
    budget_seconds: float
    seed: int
    exclude: list[str]
    job_id: str
    leaderboard: list[dict[str, Any]] = Field(description="Best first, filled in as it runs.")
    results: dict[str, Any] | None = Field(
        description="Holdout metrics, dropped columns, feature importance... once finished."
    )
    has_model: bool = Field(description="The model can be downloaded from .../model.")
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, run: Any) -> "RunRead":
        fields = {name: getattr(run, name) for name in cls.model_fields if name != "has_model"}
        return cls(**fields, has_model=run.model_blob_id is not None)


class RunWithJob(BaseModel):
    run: RunRead
    job: JobRead
