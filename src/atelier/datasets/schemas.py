"""What the datasets API reads and writes."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    latest_version: int = Field(description="The number of the newest version.")
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class VersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    number: int
    filename: str = Field(description="The file's name as uploaded (display only).")
    format: str = Field(description="Detected from the content: csv, tsv, json, jsonl, ...")
    format_details: dict[str, Any] = Field(
        description="What detection found: delimiter, encoding, sheet, renamed columns..."
    )
    size_bytes: int
    rows: int
    columns: int
    schema_: list[dict[str, Any]] = Field(
        alias="schema",
        serialization_alias="schema",
        description="Each column's name, kind and storage type, in order.",
    )
    schema_diff: dict[str, Any] | None = Field(
        description="Columns added, removed and changed since the previous version."
    )
    created_by: str | None
    created_at: datetime

    @classmethod
    def of(cls, version: Any) -> "VersionRead":
        return cls.model_validate(
            {**{k: getattr(version, k) for k in cls.model_fields if k != "schema_"}}
            | {"schema": version.schema}
        )


class DatasetDetail(DatasetRead):
    versions: list[VersionRead] = Field(description="Newest first.")


class UploadResult(BaseModel):
    dataset: DatasetRead
    version: VersionRead
