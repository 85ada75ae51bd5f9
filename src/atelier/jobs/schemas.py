"""What the jobs API reads and writes."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    queue: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled.")
    waiting: bool = Field(
        description="Queued and waiting for a slot (the organization's concurrent-jobs limit "
        "or a busy queue)."
    )
    progress: float = Field(description="From 0 to 1.")
    progress_message: str | None
    payload: dict[str, Any]
    result: Any | None
    error: dict[str, Any] | None = Field(description="A problem document when the job failed.")
    attempt: int
    max_attempts: int
    timeout_seconds: int
    cancel_requested: bool
    compute_seconds: float
    created_by: str | None
    created_at: datetime
    not_before: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    revision: int

    @classmethod
    def of(cls, job: Any) -> "JobRead":
        return cls.model_validate(
            {
                **{name: getattr(job, name) for name in cls.model_fields if hasattr(job, name)},
                "waiting": job.status == "queued" and job.dispatched_at is None,
                "cancel_requested": job.cancel_requested_at is not None,
            }
        )


class AdminJobRead(JobRead):
    org_id: str
    worker: str | None

    @classmethod
    def of(cls, job: Any) -> "AdminJobRead":
        return cls.model_validate(
            {**JobRead.of(job).model_dump(), "org_id": job.org_id, "worker": job.worker}
        )


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=64, description="A kind that may be submitted directly.")
    payload: dict[str, Any] = Field(default_factory=dict)


class LogLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    attempt: int
    at: datetime
    level: str
    message: str


class JobKindRead(BaseModel):
    name: str
    queue: str
    description: str
    timeout_seconds: int
    max_attempts: int
    payload_schema: dict[str, Any]
