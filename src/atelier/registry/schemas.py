"""What the models API reads and writes."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["none", "staging", "production", "archived"]


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    latest_version: int = Field(description="The number of the newest version.")
    production_version: int | None = Field(
        default=None, description="The version in production, if one is."
    )
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class VersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    number: int
    stage: Stage
    source: Literal["automl", "upload"]
    format: Literal["atelier", "skops", "onnx"] = Field(
        description="`atelier`: an AutoML ensemble (skops); `skops`: an uploaded scikit-learn "
        "compatible estimator; `onnx`: an uploaded ONNX graph."
    )
    description: str | None
    run_id: str | None
    dataset_id: str | None
    dataset_version: int | None
    task: str | None
    target: str | None
    metrics: dict[str, Any]
    signature: dict[str, Any] = Field(
        description="Input columns and types, allowed categories, output classes."
    )
    lineage: dict[str, Any] = Field(
        description="Run, dataset version, parameters, metrics, library and Atelier versions."
    )
    onnx_export: bool = Field(description="The version's zip holds an ONNX export (model.onnx).")
    onnx_note: str | None = Field(description="Why there is no ONNX export, when there is none.")
    size_bytes: int = Field(description="Of the version's zip.")
    sha256: str = Field(description="Of the model file itself.")
    created_by: str | None
    created_at: datetime
    stage_changed_at: datetime | None
    stage_changed_by: str | None


class ModelDetail(ModelRead):
    versions: list[VersionRead] = Field(description="The newest versions first (at most 50).")


class FromRun(BaseModel):
    """Register an AutoML run's model as a new version."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(max_length=40)
    description: str | None = Field(default=None, max_length=2000)


class StageChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Stage = Field(
        description="`production` archives the version in production, if another one is."
    )
