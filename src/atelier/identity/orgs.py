"""Organizations and memberships: who belongs where, with which role."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, Forbidden, NotFound
from atelier.core.principal import Principal, Role, role_at_least
from atelier.identity import api_keys
from atelier.identity.models import Membership, Organization, User
from atelier.plans import service as plans_service
from atelier.plans.models import Plan


@dataclass(frozen=True)
class MembershipView:
    org_id: str
    org_name: str
    role: Role
    is_personal: bool


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    display_name: str
    role: Role
    joined_at: datetime


async def memberships_of(session: AsyncSession, user_id: str) -> list[MembershipView]:
    """The user's organizations, personal first, then by name."""
    rows = await session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.is_personal.desc(), Organization.name, Organization.id)
    )
    return [MembershipView(org.id, org.name, role, org.is_personal) for org, role in rows]


async def plan_of(session: AsyncSession, org_id: str) -> Plan:
    """The organization's plan (for its quotas), or NotFound."""
    plan_id = await session.scalar(select(Organization.plan_id).where(Organization.id == org_id))
    if plan_id is None:
        raise NotFound(f"No organization {org_id}")
    return await plans_service.get_plan(session, plan_id)


async def get_org(session: AsyncSession, principal: Principal) -> Organization:
    """The principal's organization (the `{org_id}` of the path was resolved into it)."""
    org = await session.get(Organization, principal.org_id)
    if org is None:
        raise NotFound(f"No organization {principal.org_id}")
    return org


async def organizations_of(session: AsyncSession, principal: Principal) -> list[MembershipView]:
    """A user's organizations; an API key's own organization."""
    if principal.user_id is not None:
        return await memberships_of(session, principal.user_id)
    org = await get_org(session, principal)
    return [MembershipView(org.id, org.name, principal.role, org.is_personal)]


async def create_org(
    session: AsyncSession, principal: Principal, *, name: str, plan_id: str, info: RequestInfo
) -> Organization:
    """A new organization with the calling user as its owner."""
    if principal.user_id is None:
        raise Forbidden("Organizations are created by people, not by API keys")
    user_id = principal.user_id
    async with transaction(session):
        plan = await plans_service.get_plan(session, plan_id)
        org = Organization(name=name, plan_id=plan.id)
        session.add(org)
        await session.flush()
        session.add(Membership(org_id=org.id, user_id=user_id, role="owner"))
        await audit.record(
            session,
            "org.created",
            info=info,
            org_id=org.id,
            user_id=user_id,
            target=("org", org.id),
            details={"name": name},
        )
    return org


async def rename_org(
    session: AsyncSession, principal: Principal, *, name: str, info: RequestInfo
) -> Organization:
    principal.require_role("admin")
    async with transaction(session):
        org = await get_org(session, principal)
        old = org.name
        org.name = name
        await audit.record(
            session,
            "org.renamed",
            info=info,
            principal=principal,
            target=("org", org.id),
            details={"from": old, "to": name},
        )
    return org


async def list_members(session: AsyncSession, principal: Principal) -> list[Member]:
    rows = await session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == principal.org_id)
        .order_by(Membership.created_at, User.id)
    )
    return [
        Member(user.id, user.email, user.display_name, m.role, m.created_at) for user, m in rows
    ]


async def add_member(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: str,
    role: Role,
    info: RequestInfo,
) -> Membership:
    """An admin adds an existing user, within the plan's member limit."""
    principal.require_role("admin")
    require_may_grant(principal, role)
    async with transaction(session):
        membership = await join_org(session, principal.org_id, user_id, role)
        await audit.record(
            session,
            "member.added",
            info=info,
            principal=principal,
            target=("user", user_id),
            details={"role": role},
        )
    return membership


async def join_org(session: AsyncSession, org_id: str, user_id: str, role: Role) -> Membership:
    """Add a membership inside the caller's unit of work: 409 if already a member, 402 past the
    plan's member limit."""
    org = await session.get(Organization, org_id)
    if org is None:
        raise NotFound(f"No organization {org_id}")
    if await session.get(Membership, (org.id, user_id)) is not None:
        raise Conflict("This user is already a member")
    count = await session.scalar(
        select(func.count()).select_from(Membership).where(Membership.org_id == org.id)
    )
    plan = await plans_service.get_plan(session, org.plan_id)
    plans_service.check_gauge(plan, "members", current=count or 0)
    membership = Membership(org_id=org.id, user_id=user_id, role=role)
    session.add(membership)
    return membership


def require_may_grant(principal: Principal, role: Role) -> None:
    """Only owners grant, change or remove the owner role."""
    if role == "owner" and not role_at_least(principal.role, "owner"):
        raise Forbidden("Only an owner can grant, change or remove the owner role")


async def change_role(
    session: AsyncSession,
    principal: Principal,
    user_id: str,
    *,
    role: Role,
    info: RequestInfo,
) -> Member:
    principal.require_role("admin")
    async with transaction(session):
        membership = await _membership(session, principal, user_id)
        require_may_grant(principal, membership.role)  # may touch this member at all
        require_may_grant(principal, role)
        if membership.role == "owner" and role != "owner":
            await _require_another_owner(session, principal.org_id, user_id)
        old = membership.role
        membership.role = role
        await audit.record(
            session,
            "member.role_changed",
            info=info,
            principal=principal,
            target=("user", user_id),
            details={"from": old, "to": role},
        )
    return next(m for m in await list_members(session, principal) if m.user_id == user_id)


async def remove_member(
    session: AsyncSession, principal: Principal, user_id: str, *, info: RequestInfo, clock: Clock
) -> None:
    """Admins remove members; anyone may leave. The last owner can do neither. The API keys the
    member created in the organization are revoked with the membership."""
    leaving = user_id == principal.user_id
    if not leaving:
        principal.require_role("admin")
    async with transaction(session):
        membership = await _membership(session, principal, user_id)
        if not leaving:
            require_may_grant(principal, membership.role)
        if membership.role == "owner":
            await _require_another_owner(session, principal.org_id, user_id)
        await session.delete(membership)
        await audit.record(
            session,
            "member.removed",
            info=info,
            principal=principal,
            target=("user", user_id),
            details={"role": membership.role, "left": leaving},
        )
        await api_keys.revoke_keys_of(
            session,
            user_id,
            org_id=principal.org_id,
            reason="creator_removed",
            principal=principal,
            info=info,
            clock=clock,
        )


async def usage(
    session: AsyncSession, principal: Principal, *, clock: Clock
) -> tuple[Organization, str, list[plans_service.MeterUsage]]:
    principal.require_role("admin")
    org = await get_org(session, principal)
    plan = await plans_service.get_plan(session, org.plan_id)
    report = await plans_service.usage_report(session, plan, org.id, clock=clock)
    return org, plans_service.period_of(clock), report


async def _membership(session: AsyncSession, principal: Principal, user_id: str) -> Membership:
    membership = await session.get(Membership, (principal.org_id, user_id))
    if membership is None:
        raise NotFound(f"No member {user_id} in this organization")
    return membership


async def _require_another_owner(session: AsyncSession, org_id: str, user_id: str) -> None:
    others = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(
            Membership.org_id == org_id, Membership.role == "owner", Membership.user_id != user_id
        )
    )
    if not others:
        raise Conflict(
            "An organization needs an owner: make someone else owner first (ownership transfer)"
        )


async def requests_per_minute(session: AsyncSession, org_id: str) -> int | None:
    """The API request limit of the organization's plan (None: unlimited)."""
    return await session.scalar(
        select(Plan.api_requests_per_minute)
        .join(Organization, Organization.plan_id == Plan.id)
        .where(Organization.id == org_id)
    )
