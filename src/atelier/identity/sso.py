"""Single sign-on, the account half: turn a verified `OidcIdentity` into an Atelier user (found by
the provider's issuer and subject, linked by verified email, or created just in time), map the
provider's groups to a role in the configured organization, and start a token family."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, Unauthorized
from atelier.core.principal import ROLES, Role
from atelier.identity import accounts, orgs
from atelier.identity.models import Membership, User, UserIdentity
from atelier.identity.oidc import OidcIdentity
from atelier.settings import AuthSettings, OidcProviderSettings

T = TypeVar("T")


def mapped_role(provider: OidcProviderSettings, groups: list[str]) -> Role | None:
    """The highest role any of the user's groups maps to, else the provider's default."""
    roles = [provider.role_mapping[g] for g in groups if g in provider.role_mapping]
    if roles:
        return max(roles, key=ROLES.index)
    return provider.default_role


async def sign_in(
    session: AsyncSession,
    provider: OidcProviderSettings,
    identity: OidcIdentity,
    *,
    auth: AuthSettings,
    info: RequestInfo,
    clock: Clock,
    start: Callable[[User], Awaitable[T]],
) -> T:
    """Find, link or create the user, then `start(user)` (a token family, a web session) in the
    same unit of work."""
    now = clock.now()
    async with transaction(session):
        link = await session.scalar(
            select(UserIdentity).where(
                UserIdentity.issuer == identity.issuer, UserIdentity.subject == identity.subject
            )
        )
        if link is not None:
            user = await session.get(User, link.user_id)
        else:
            user = await _link_or_create(
                session, provider, identity, auth=auth, info=info, clock=clock
            )
            link = UserIdentity(
                user_id=user.id,
                provider=provider.name,
                issuer=identity.issuer,
                subject=identity.subject,
                email=identity.email,
            )
            session.add(link)
        if user is None or not user.is_active:
            await audit.record(
                session,
                "auth.sso_sign_in",
                outcome="failure",
                info=info,
                user_id=link.user_id,
                details={"provider": provider.name, "reason": "inactive"},
            )
            pair = None
        else:
            link.last_login_at = now
            link.email = identity.email
            user.last_login_at = now
            if provider.org_id:
                await _apply_role(session, provider, user, identity, info=info)
            pair = await start(user)
            await audit.record(
                session,
                "auth.sso_sign_in",
                info=info,
                user_id=user.id,
                target=("user", user.id),
                details={"provider": provider.name},
            )
    if pair is None:
        raise Unauthorized("This account is disabled")
    return pair


async def _link_or_create(
    session: AsyncSession,
    provider: OidcProviderSettings,
    identity: OidcIdentity,
    *,
    auth: AuthSettings,
    info: RequestInfo,
    clock: Clock,
) -> User:
    """The user with the identity's verified email, or a new one without a password.

    Linking an existing account trusts the provider's `email_verified`, which some multi-tenant
    providers do not guarantee: it is done only for providers limited to `allowed_domains`.
    """
    user = await accounts.find_user_by_email(session, identity.email)
    if user is not None:
        if not provider.allowed_domains:
            raise Conflict(
                "An account with this email already exists: sign in with its password; an "
                "administrator can allow linking by limiting the provider to your domain",
                reason="account-exists",
            )
        await audit.record(
            session,
            "auth.sso_linked",
            info=info,
            user_id=user.id,
            target=("user", user.id),
            details={"provider": provider.name},
        )
        return user
    return await accounts.add_user(
        session,
        email=identity.email,
        display_name=(identity.name or identity.email.split("@")[0])[:100],
        password_hash=None,  # signs in through the provider only
        auth=auth,
        info=info,
        clock=clock,
        details={"provider": provider.name},
    )


async def _apply_role(
    session: AsyncSession,
    provider: OidcProviderSettings,
    user: User,
    identity: OidcIdentity,
    *,
    info: RequestInfo,
) -> None:
    """Join the provider's organization, or follow a change of groups. An owner is never
    demoted by a group change (owners are managed in Atelier)."""
    role = mapped_role(provider, identity.groups)
    assert provider.org_id is not None
    membership = await session.get(Membership, (provider.org_id, user.id))
    if membership is None:
        if role is None:
            return
        await orgs.join_org(session, provider.org_id, user.id, role)
        await audit.record(
            session,
            "member.added",
            info=info,
            org_id=provider.org_id,
            user_id=user.id,
            target=("user", user.id),
            details={"role": role, "provider": provider.name},
        )
    elif role is not None and role != membership.role and membership.role != "owner":
        old, membership.role = membership.role, role
        await audit.record(
            session,
            "member.role_changed",
            info=info,
            org_id=provider.org_id,
            user_id=user.id,
            target=("user", user.id),
            details={"from": old, "to": role, "provider": provider.name},
        )
