"""Sign-ins of the web UI: an opaque token in an HttpOnly cookie, its hash in the database, so a
session can be listed and revoked (unlike a self-contained signed cookie)."""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.clock import Clock
from atelier.core.db import transaction
from atelier.core.errors import NotFound
from atelier.core.principal import ROLE_SCOPES, Principal
from atelier.identity.models import Membership, User, WebSession
from atelier.identity.orgs import memberships_of
from atelier.identity.tokens import hash_token

TOKEN_PREFIX = "ws_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class WebUser:
    """Who is signed in to the UI, and in which organization they act."""

    user: User
    session_id: str
    principal: Principal


async def start(session: AsyncSession, user: User, *, lifetime: timedelta, clock: Clock) -> str:
    """A new web session for the user, inside the caller's unit of work; returns the token."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = clock.now()
    session.add(
        WebSession(
            token_hash=hash_token(token), user_id=user.id, created_at=now, expires_at=now + lifetime
        )
    )
    return token


async def resolve(session: AsyncSession, token: str, *, clock: Clock) -> WebUser | None:
    """The signed-in user of a cookie, or None (unknown, expired, revoked, disabled)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = await session.scalar(select(WebSession).where(WebSession.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= clock.now():
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    memberships = await memberships_of(session, user.id)
    if not memberships:
        return None
    chosen = next((m for m in memberships if m.org_id == row.org_id), memberships[0])
    principal = Principal(
        org_id=chosen.org_id,
        role=chosen.role,
        user_id=user.id,
        scopes=ROLE_SCOPES[chosen.role],
        is_superadmin=user.is_superadmin,
    )
    return WebUser(user, row.id, principal)


async def choose_org(session: AsyncSession, web_user: WebUser, org_id: str) -> None:
    """Act in another of the user's organizations."""
    async with transaction(session):
        if await session.get(Membership, (org_id, web_user.user.id)) is None:
            raise NotFound(f"No organization {org_id}")
        await session.execute(
            update(WebSession).where(WebSession.id == web_user.session_id).values(org_id=org_id)
        )


async def end(session: AsyncSession, token: str, *, clock: Clock) -> None:
    async with transaction(session):
        await session.execute(
            update(WebSession)
            .where(WebSession.token_hash == hash_token(token), WebSession.revoked_at.is_(None))
            .values(revoked_at=clock.now())
        )
