"""Response shapes of the operations endpoints."""

from typing import Literal

from pydantic import BaseModel


class HealthRead(BaseModel):
    status: Literal["ok"] = "ok"


class CheckRead(BaseModel):
    status: Literal["ok", "fail", "skip"]
    detail: str
    duration_ms: float


class ReadinessRead(BaseModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, CheckRead]


class VersionRead(BaseModel):
    version: str
    api: str
