"""Request and response shapes of the identity API."""

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from atelier.core.principal import ApiScope, Role


def _clean_name(value: str) -> str:
    """Names are shown to other people: no control, format (bidi, zero-width) characters."""
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") for c in value):
        raise ValueError("must not contain control or invisible formatting characters")
    if not value:
        raise ValueError("must not be blank")
    return value


Name = Annotated[str, StringConstraints(max_length=100), AfterValidator(_clean_name)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Locale = Literal["en", "fr"]


class UserCreate(BaseModel):
    email: EmailStr
    password: Password
    display_name: Name
    locale: Locale = "en"
    invitation: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="Invitation token (required when sign-up is by invitation)."
    )


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    display_name: str
    locale: str
    is_superadmin: bool
    created_at: datetime
    last_login_at: datetime | None


class TokenRead(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str


class RefreshRequest(BaseModel):
    refresh_token: Annotated[str, StringConstraints(max_length=200)]


class MembershipRead(BaseModel):
    org_id: str
    org_name: str
    role: Role
    is_personal: bool


class MeRead(BaseModel):
    """Who is calling: a user (with their organizations) or an API key."""

    kind: Literal["user", "api_key"]
    org_id: str
    role: Role
    scopes: list[str]
    api_key_id: str | None
    user: UserRead | None
    memberships: list[MembershipRead]


class OrgCreate(BaseModel):
    name: Name


class OrgUpdate(BaseModel):
    name: Name | None = None


class OrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    plan_id: str
    is_personal: bool
    trial_ends_at: datetime | None
    created_at: datetime


class MemberRead(BaseModel):
    user_id: str
    email: str
    display_name: str
    role: Role
    joined_at: datetime


class MemberUpdate(BaseModel):
    role: Role


class ApiKeyCreate(BaseModel):
    name: Name
    scopes: list[ApiScope] = Field(default_factory=lambda: ["read"], min_length=1, max_length=3)
    expires_at: datetime | None = None


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself. Shown once: store it now.")


class MeterUsageRead(BaseModel):
    meter: str
    used: int
    limit: int | None


class UsageRead(BaseModel):
    org_id: str
    plan_id: str
    period: str
    meters: list[MeterUsageRead]


class InvitationCreate(BaseModel):
    email: EmailStr
    role: Role = "member"


class InvitationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    role: Role
    invited_by: str | None
    created_at: datetime
    expires_at: datetime


class InvitationCreated(InvitationRead):
    link: str = Field(description="The invitation link, to pass on to the invitee.")


class InvitationAccept(BaseModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class AdminUserRead(UserRead):
    is_active: bool


class AdminUserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    is_active: bool | None = None
    is_superadmin: bool | None = None


class OrgPlanUpdate(BaseModel):
    plan_id: Annotated[str, StringConstraints(min_length=1, max_length=32)]
