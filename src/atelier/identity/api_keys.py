"""API keys: per organization, scoped, shown once, stored as a hash, revocable.

A key reads `atk_<prefix>_<secret>`: the prefix is public (listed, used to find the row), the
secret is 256 random bits checked against a SHA-256 hash in constant time.

A key never does more than its creator may do now. The query that finds the key also reads the
creator's current role in the key's organization and whether their account is active, so every
request acts with the intersection of the key's scopes and that role, at no extra round trip and
with no cache to invalidate: a demotion narrows the key at once, and a creator who left the
organization or was disabled makes it invalid. Removing or disabling the creator also revokes
their keys (audited), so they stay dead if the creator comes back.
"""

import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Row, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Forbidden, InvalidInput, Unauthorized
from atelier.core.principal import ROLE_SCOPES, ROLES, SCOPE_ROLE, ApiScope, Principal, Role
from atelier.core.tenancy import get_owned, org_select
from atelier.identity.models import ApiKey, Membership, User
from atelier.identity.tokens import hash_token

KEY_PREFIX = "atk_"
# Writing last_used_at on every call would turn each read into a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


async def create_key(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    scopes: list[ApiScope],
    expires_at: datetime | None,
    info: RequestInfo,
    clock: Clock,
) -> tuple[ApiKey, str]:
    """The new key's row and the key itself (never stored, never shown again)."""
    if principal.kind != "user":
        raise Forbidden("API keys are created by people, not by other keys")
    principal.require_role("member")
    allowed = ROLE_SCOPES[principal.role]
    if not set(scopes) <= allowed:
        raise Forbidden(
            f"As {principal.role} you may give a key only {', '.join(sorted(allowed))}",
            allowed_scopes=sorted(allowed),
        )
    if expires_at is not None and expires_at <= clock.now():
        raise InvalidInput(
            "The expiry is in the past",
            errors=[{"pointer": "/body/expires_at", "detail": "must be in the future"}],
        )
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    async with transaction(session):
        row = ApiKey(
            org_id=principal.org_id,
            name=name,
            prefix=prefix,
            key_hash=hash_token(key),
            scopes=sorted(set(scopes)),
            created_by=principal.user_id,
            expires_at=expires_at,
        )
        session.add(row)
        await session.flush()
        await audit.record(
            session,
            "api_key.created",
            info=info,
            principal=principal,
            target=("api_key", row.id),
            details={"scopes": row.scopes},
        )
    return row, key


async def list_keys(session: AsyncSession, principal: Principal) -> list[ApiKey]:
    """Admins see every key of the organization (with its creator); members their own."""
    principal.require_role("member")
    statement = org_select(ApiKey, principal)
    if principal.role not in ("admin", "owner"):
        statement = statement.where(ApiKey.created_by == principal.user_id)
    rows = await session.scalars(statement.order_by(ApiKey.created_at.desc(), ApiKey.id))
    return list(rows)


async def revoke_key(
    session: AsyncSession, principal: Principal, key_id: str, *, info: RequestInfo, clock: Clock
) -> None:
    """Admins revoke any key of the organization; members their own."""
    principal.require_role("member")
    async with transaction(session):
        row = await get_owned(session, ApiKey, principal, key_id, what="API key")
        if row.created_by != principal.user_id:
            principal.require_role("admin")
        if row.revoked_at is None:
            row.revoked_at = clock.now()
            await audit.record(
                session,
                "api_key.revoked",
                info=info,
                principal=principal,
                target=("api_key", row.id),
            )


async def revoke_keys_of(
    session: AsyncSession,
    user_id: str,
    *,
    org_id: str | None,
    reason: str,
    principal: Principal | None,
    info: RequestInfo,
    clock: Clock,
) -> list[str]:
    """Revoke, inside the caller's unit of work, the live keys `user_id` created in `org_id`
    (None: in every organization), one audit event each; the ids of the keys revoked."""
    statement = select(ApiKey).where(ApiKey.created_by == user_id, ApiKey.revoked_at.is_(None))
    if org_id is not None:
        statement = statement.where(ApiKey.org_id == org_id)
    rows = list(await session.scalars(statement.order_by(ApiKey.id)))
    for row in rows:
        row.revoked_at = clock.now()
        await audit.record(
            session,
            "api_key.revoked",
            info=info,
            principal=principal,
            org_id=row.org_id,
            target=("api_key", row.id),
            details={"reason": reason, "creator": user_id},
        )
    return [r.id for r in rows]


async def authenticate(session: AsyncSession, key: str, *, clock: Clock) -> Principal:
    """The principal a key acts as: its organization, and the scopes and role it grants that
    its creator still holds there. Unauthorized once the creator left or was disabled."""
    _, _, rest = key.partition(KEY_PREFIX)
    prefix, _, secret = rest.partition("_")
    found = await _find_with_creator(session, prefix) if secret else None
    now = clock.now()
    if found is None or not hmac.compare_digest(found[0].key_hash, hash_token(key)):
        raise Unauthorized("Unknown API key")
    row, creator_role, creator_active = found
    if row.revoked_at is not None:
        raise Unauthorized("This API key was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("This API key has expired")
    if creator_role is None or not creator_active:
        raise Unauthorized(
            "This API key is no longer valid: its creator left the organization or was disabled"
        )
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        async with transaction(session):
            row.last_used_at = now
    scopes = frozenset(row.scopes) & ROLE_SCOPES[creator_role]
    granted: Role = max((SCOPE_ROLE[s] for s in row.scopes), key=ROLES.index)
    role = min(granted, creator_role, key=ROLES.index)
    return Principal(org_id=row.org_id, role=role, api_key_id=row.id, scopes=scopes)


async def _find_with_creator(session: AsyncSession, prefix: str) -> Row | None:
    """(key, creator's role in the key's organization or None, creator is active or None)."""
    creator_membership = and_(
        Membership.org_id == ApiKey.org_id, Membership.user_id == ApiKey.created_by
    )
    result = await session.execute(
        select(ApiKey, Membership.role, User.is_active)
        .outerjoin(Membership, creator_membership)
        .outerjoin(User, User.id == ApiKey.created_by)
        .where(ApiKey.prefix == prefix)
    )
    return result.first()
