"""Routes for platform operators (superadmins): `/api/v1/admin/…`."""

from typing import Annotated

from fastapi import APIRouter, Query

from atelier.audit import service as audit_service
from atelier.audit.schemas import AuditEventRead
from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.pagination import Page, PageParams
from atelier.core.routing import API_PREFIX, operation
from atelier.identity import admin
from atelier.identity.deps import Superadmin
from atelier.identity.schemas import AdminUserRead, AdminUserUpdate, OrgPlanUpdate, OrgRead
from atelier.plans import service as plans_service
from atelier.plans.schemas import PlanRead, PlanUpdate, UsageRowRead

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])

# ---- platform operators (superadmins) -------------------------------------------------------


@router.get("/users", response_model=Page[AdminUserRead], **operation("user", "admin"))
async def admin_list_users(
    principal: Superadmin,
    session: DbSession,
    page: PageParams,
    search: Annotated[str | None, Query(max_length=100)] = None,
):
    return await admin.list_users(session, principal, page, search=search)


@router.patch("/users/{user_id}", response_model=AdminUserRead, **operation("user", "admin"))
async def admin_update_user(
    user_id: str,
    body: AdminUserUpdate,
    principal: Superadmin,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
):
    return await admin.update_user(
        session,
        principal,
        user_id,
        is_active=body.is_active,
        is_superadmin=body.is_superadmin,
        info=info,
        clock=clock,
    )


@router.get("/orgs", response_model=Page[OrgRead], **operation("org", "admin"))
async def admin_list_orgs(principal: Superadmin, session: DbSession, page: PageParams):
    return await admin.list_orgs(session, principal, page)


@router.patch("/orgs/{org_id}", response_model=OrgRead, **operation("org", "admin"))
async def admin_change_plan(
    org_id: str,
    body: OrgPlanUpdate,
    principal: Superadmin,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
):
    return await admin.change_plan(
        session, principal, org_id, plan_id=body.plan_id, info=info, clock=clock
    )


@router.get("/plans", response_model=list[PlanRead], **operation("plan", "admin"))
async def admin_list_plans(principal: Superadmin, session: DbSession):
    principal.require_superadmin()
    return await plans_service.list_plans(session)


@router.put("/plans/{plan_id}", response_model=PlanRead, **operation("plan", "admin"))
async def admin_update_plan(
    plan_id: str,
    body: PlanUpdate,
    principal: Superadmin,
    session: DbSession,
    info: ClientInfo,
):
    changes = body.model_dump(exclude_unset=True)
    return await admin.update_plan(session, principal, plan_id, changes, info=info)


@router.get("/usage", response_model=Page[UsageRowRead], **operation("usage", "admin"))
async def admin_usage(
    principal: Superadmin,
    session: DbSession,
    page: PageParams,
    clock: AppClock,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
):
    return await admin.usage_by_org(session, principal, page, clock=clock, period=period)


@router.get(
    "/audit-events", response_model=Page[AuditEventRead], **operation("audit_event", "admin")
)
async def admin_audit_events(
    principal: Superadmin,
    session: DbSession,
    page: PageParams,
    action: Annotated[str | None, Query(max_length=64)] = None,
    org_id: Annotated[str | None, Query(max_length=40)] = None,
):
    filters = audit_service.EventFilter(action=action, org_id=org_id)
    return await audit_service.list_events(session, principal, page, filters, all_orgs=True)
