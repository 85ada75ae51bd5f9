"""Builders of users, organizations and credentials with valid defaults."""

import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.clock import SystemClock
from atelier.core.context import NO_REQUEST
from atelier.core.principal import Role
from atelier.identity import accounts
from atelier.identity.deps import TOKEN_URL
from atelier.identity.models import Membership, User
from atelier.identity.orgs import memberships_of
from atelier.settings import AuthSettings

PASSWORD = "correct horse battery staple 42"


def unique_email(name: str = "user") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}@example.com"


async def make_user(
    session: AsyncSession,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    display_name: str = "Ada Lovelace",
) -> User:
    """A registered user with a personal organization (owner)."""
    return await accounts.register(
        session,
        email=email or unique_email(),
        password=password,
        display_name=display_name,
        locale="en",
        auth=AuthSettings(),
        info=NO_REQUEST,
        clock=SystemClock(),
    )


async def personal_org_id(session: AsyncSession, user: User) -> str:
    return (await memberships_of(session, user.id))[0].org_id


async def join(session: AsyncSession, user: User, org_id: str, role: Role) -> None:
    session.add(Membership(org_id=org_id, user_id=user.id, role=role))
    await session.commit()


@dataclass
class SignedIn:
    """A user with an access token, acting in one organization."""

    user: User
    org_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Atelier-Org": self.org_id}


async def sign_in(client: httpx.AsyncClient, user: User, org_id: str) -> SignedIn:
    response = await client.post(TOKEN_URL, data={"username": user.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return SignedIn(user, org_id, response.json()["access_token"])
