"""Plans and usage as the API shows them."""

from pydantic import BaseModel, ConfigDict, Field

Limit = int | None


class PlanRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    max_members: Limit
    max_concurrent_jobs: Limit
    max_storage_bytes: Limit
    monthly_compute_seconds: Limit
    monthly_image_generations: Limit
    monthly_photo_processings: Limit
    monthly_predictions: Limit
    api_requests_per_minute: Limit
    trial_days: Limit
    max_orgs_owned: Limit


class PlanUpdate(BaseModel):
    """Only the fields sent change; `null` makes a limit unlimited."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=64)
    max_members: Limit = Field(default=None, ge=1)
    max_concurrent_jobs: Limit = Field(default=None, ge=0)
    max_storage_bytes: Limit = Field(default=None, ge=0)
    monthly_compute_seconds: Limit = Field(default=None, ge=0)
    monthly_image_generations: Limit = Field(default=None, ge=0)
    monthly_photo_processings: Limit = Field(default=None, ge=0)
    monthly_predictions: Limit = Field(default=None, ge=0)
    api_requests_per_minute: Limit = Field(default=None, ge=1)
    trial_days: Limit = Field(default=None, ge=1, le=365)
    max_orgs_owned: Limit = Field(default=None, ge=1)


class UsageRowRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    org_id: str
    meter: str
    period: str
    amount: int
