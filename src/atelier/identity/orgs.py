"""Organizations and memberships: who belongs where, with which role."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.clock import Clock
from atelier.core.context import NO_REQUEST, RequestInfo
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
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    plan_id: str,
    info: RequestInfo,
    clock: Clock,
) -> Organization:
    """A new organization with the calling user as its owner, its trial (if the plan is one)
    ending `trial_days` from now; 402 past the user's organization limit (superadmins have
    none)."""
    if principal.user_id is None:
        raise Forbidden("Organizations are created by people, not by API keys")
    user_id = principal.user_id
    async with transaction(session):
        plan = await plans_service.get_plan(session, plan_id)
        if not principal.is_superadmin:
            await _require_room_for_another_org(session, user_id, plan)
        org = Organization(
            name=name,
            plan_id=plan.id,
            created_by=user_id,
            trial_ends_at=plans_service.trial_end(plan, clock=clock),
        )
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
            details={"name": name, "plan": plan.id},
        )
    return org


async def _require_room_for_another_org(session: AsyncSession, user_id: str, plan: Plan) -> None:
    """402 when the user already owns or created as many organizations as the plans of those
    they own allow (owning none: as many as `plan`, the new one's, allows).

    Organizations the user created count even once handed over, so making someone else owner
    and leaving frees no place. The user's row is locked first (PostgreSQL; SQLite's writers
    queue anyway), so two concurrent requests cannot both take the last place.
    """
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    owned = select(Membership.org_id).where(
        Membership.user_id == user_id, Membership.role == "owner"
    )
    count = await session.scalar(
        select(func.count())
        .select_from(Organization)
        .where(or_(Organization.created_by == user_id, Organization.id.in_(owned)))
    )
    plans = list(
        await session.scalars(
            select(Plan)
            .join(Organization, Organization.plan_id == Plan.id)
            .where(Organization.id.in_(owned))
        )
    )
    plans_service.check_orgs_owned(plans or [plan], current=count or 0)


@dataclass(frozen=True)
class PlanStatus:
    plan: Plan
    trial_ends_at: datetime | None
    trial_days_left: int | None  # None: not on a trial plan; 0: the trial has ended


async def plan_status(session: AsyncSession, principal: Principal, *, clock: Clock) -> PlanStatus:
    """The organization's plan and what is left of its trial, for any member."""
    org = await get_org(session, principal)
    plan = await plans_service.get_plan(session, org.plan_id)
    left = plans_service.trial_days_left(plan, org.trial_ends_at, clock=clock)
    return PlanStatus(plan, org.trial_ends_at, left)


async def expire_trials(
    session: AsyncSession, *, plan_after_trial: str, clock: Clock, batch: int = 500
) -> int:
    """Move every organization whose trial has ended to `plan_after_trial`, one audit event
    (`org.trial_expired`) each; returns how many moved. Running it again moves nothing more.

    An organization on a trial plan (one with `trial_days`) whose `trial_ends_at` has passed
    is expired; `trial_ends_at` stays, saying when. Rows another transaction holds are left
    for the next run rather than waited for.
    """
    moved = 0
    while True:
        async with transaction(session):
            after = await plans_service.get_plan(session, plan_after_trial)
            ended = list(
                await session.scalars(
                    select(Organization)
                    .join(Plan, Plan.id == Organization.plan_id)
                    .where(
                        Plan.trial_days.is_not(None),
                        Organization.trial_ends_at <= clock.now(),
                        Organization.plan_id != after.id,
                    )
                    .order_by(Organization.trial_ends_at, Organization.id)
                    .limit(batch)
                    .with_for_update(of=Organization, skip_locked=True)
                )
            )
            for org in ended:
                old = org.plan_id
                org.plan_id = after.id
                await audit.record(
                    session,
                    "org.trial_expired",
                    info=NO_REQUEST,
                    org_id=org.id,
                    target=("org", org.id),
                    details={
                        "from": old,
                        "to": after.id,
                        "trial_ended_at": org.trial_ends_at.isoformat(),
                    },
                )
        moved += len(ended)
        if len(ended) < batch:
            return moved


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
