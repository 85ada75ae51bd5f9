"""Operator (superadmin) views and actions across every organization. Each action is audited."""

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, NotFound
from atelier.core.pagination import Page, PageRequest, paginate
from atelier.core.principal import Principal
from atelier.identity import api_keys
from atelier.identity.models import Membership, Organization, User
from atelier.plans import service as plans_service
from atelier.plans.models import Plan, Usage


def _require(principal: Principal) -> None:
    principal.require_superadmin()


async def list_users(
    session: AsyncSession, principal: Principal, page: PageRequest, *, search: str | None
) -> Page[Any]:
    _require(principal)
    statement = select(User).order_by(User.created_at.desc(), User.id)
    if search:
        pattern = f"%{search.strip().lower()}%"
        statement = statement.where(
            or_(User.email.like(pattern), func.lower(User.display_name).like(pattern))
        )
    return await paginate(session, statement, page)


async def update_user(
    session: AsyncSession,
    principal: Principal,
    user_id: str,
    *,
    is_active: bool | None,
    is_superadmin: bool | None,
    info: RequestInfo,
    clock: Clock,
) -> User:
    """Enable, disable, promote or demote an account. Disabling it revokes every API key it
    created (access tokens are refused on their next use: each request checks the account)."""
    _require(principal)
    async with transaction(session):
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound(f"No user {user_id}")
        if user.id == principal.user_id and (is_active is False or is_superadmin is False):
            raise Conflict("Operators cannot disable or demote themselves")
        changes = {}
        if is_active is not None and is_active != user.is_active:
            changes["is_active"] = [user.is_active, is_active]
            user.is_active = is_active
            if not is_active:
                await api_keys.revoke_keys_of(
                    session,
                    user.id,
                    org_id=None,
                    reason="creator_disabled",
                    principal=principal,
                    info=info,
                    clock=clock,
                )
        if is_superadmin is not None and is_superadmin != user.is_superadmin:
            changes["is_superadmin"] = [user.is_superadmin, is_superadmin]
            user.is_superadmin = is_superadmin
        if changes:
            await audit.record(
                session,
                "admin.user_updated",
                info=info,
                principal=principal,
                org_id=None,
                target=("user", user.id),
                details=changes,
            )
    return user


async def list_orgs(session: AsyncSession, principal: Principal, page: PageRequest) -> Page[Any]:
    _require(principal)
    return await paginate(
        session,
        select(Organization).order_by(Organization.created_at.desc(), Organization.id),
        page,
    )


async def change_plan(
    session: AsyncSession,
    principal: Principal,
    org_id: str,
    *,
    plan_id: str,
    info: RequestInfo,
    clock: Clock,
) -> Organization:
    """Move an organization to another plan. A trial plan starts a trial from now (moving back
    to a trial must not give one that never ends); any other plan ends the trial."""
    _require(principal)
    async with transaction(session):
        org = await session.get(Organization, org_id)
        if org is None:
            raise NotFound(f"No organization {org_id}")
        plan = await plans_service.get_plan(session, plan_id)
        members = await session.scalar(
            select(func.count()).select_from(Membership).where(Membership.org_id == org.id)
        )
        plans_service.check_gauge(plan, "members", current=(members or 0), adding=0)
        old = org.plan_id
        if plan.id != old:
            org.plan_id = plan.id
            org.trial_ends_at = plans_service.trial_end(plan, clock=clock)
        await audit.record(
            session,
            "admin.plan_changed",
            info=info,
            principal=principal,
            org_id=org.id,
            target=("org", org.id),
            details={"from": old, "to": plan.id},
        )
    return org


async def update_plan(
    session: AsyncSession,
    principal: Principal,
    plan_id: str,
    limits: dict[str, Any],
    *,
    info: RequestInfo,
) -> Plan:
    """Change a plan's name or limits (None: unlimited)."""
    _require(principal)
    async with transaction(session):
        plan = await plans_service.get_plan(session, plan_id)
        before = {name: getattr(plan, name) for name in limits}
        for name, value in limits.items():
            setattr(plan, name, value)
        await audit.record(
            session,
            "admin.plan_updated",
            info=info,
            principal=principal,
            org_id=None,
            target=("plan", plan.id),
            details={"before": before, "after": limits},
        )
    return plan


async def usage_by_org(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    clock: Clock,
    period: str | None,
) -> Page[Any]:
    """Usage rows of one month (default: this one), largest first."""
    _require(principal)
    statement = (
        select(Usage)
        .where(Usage.period == (period or plans_service.period_of(clock)))
        .order_by(Usage.amount.desc(), Usage.id)
    )
    return await paginate(session, statement, page)
