"""Turn a bearer credential into a Principal acting in one organization."""

from sqlalchemy import Row, exists, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.clock import Clock
from atelier.core.errors import NotFound, Unauthorized
from atelier.core.principal import ROLE_SCOPES, Principal
from atelier.identity import api_keys, tokens
from atelier.identity.models import Membership, RefreshToken, User
from atelier.identity.orgs import memberships_of


async def resolve(
    session: AsyncSession,
    credential: str,
    *,
    org_id: str | None,
    config: tokens.TokenConfig,
    clock: Clock,
) -> Principal:
    """A user (access token) in `org_id`, or their first organization; or an API key in its
    own. An organization the caller does not belong to is NotFound, as if it did not exist."""
    if api_keys.looks_like_key(credential):
        principal = await api_keys.authenticate(session, credential, clock=clock)
        if org_id is not None and org_id != principal.org_id:
            raise NotFound(f"No organization {org_id}")
        return principal
    claims = tokens.read_access_token(credential, config.keys, issuer=config.issuer)
    user, signed_in, member_role = await _account(session, claims, org_id) or (None, False, None)
    if user is None or not user.is_active:
        raise Unauthorized("This account no longer exists or is disabled")
    if not signed_in:
        raise Unauthorized(
            "The access token is not valid: its sign-in has ended (signed out, or ended after "
            "a refresh token was reused)",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if org_id is None:
        memberships = await memberships_of(session, user.id)
        if not memberships:
            raise NotFound("You belong to no organization")
        org_id, role = memberships[0].org_id, memberships[0].role
    elif member_role is None:
        raise NotFound(f"No organization {org_id}")
    else:
        role = member_role
    return Principal(
        org_id=org_id,
        role=role,
        user_id=user.id,
        scopes=ROLE_SCOPES[role],
        is_superadmin=user.is_superadmin,
    )


async def _account(
    session: AsyncSession, claims: tokens.AccessClaims, org_id: str | None
) -> Row | None:
    """(user, signed in, role) in one statement: the account; whether the token's sign-in goes
    on (a refresh token of its family is not revoked); the role in `org_id` (None: not a member,
    or no `org_id`). One round trip, as the account lookup alone took, and no cache to share
    between API processes or to invalidate."""
    signed_in = exists().where(
        RefreshToken.family_id == claims.session_id,
        RefreshToken.user_id == User.id,
        RefreshToken.revoked_at.is_(None),
    )
    role = (
        select(Membership.role)
        .where(Membership.org_id == org_id, Membership.user_id == User.id)
        .scalar_subquery()
        if org_id is not None
        else null()
    )
    result = await session.execute(select(User, signed_in, role).where(User.id == claims.user_id))
    return result.first()
