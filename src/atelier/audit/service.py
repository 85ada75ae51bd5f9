"""Record and query audit events. There is deliberately no update or delete."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit.models import AuditEvent
from atelier.core.context import RequestInfo
from atelier.core.pagination import Page, PageRequest, paginate
from atelier.core.principal import Principal


async def record(
    session: AsyncSession,
    action: str,
    *,
    info: RequestInfo,
    principal: Principal | None = None,
    org_id: str | None = None,
    user_id: str | None = None,
    target: tuple[str, str] | None = None,
    outcome: Literal["success", "failure"] = "success",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to the session; it is written with the caller's unit of work.

    The actor is the principal when there is one, else `user_id` (a sign-in, for example).
    """
    event = AuditEvent(
        action=action,
        outcome=outcome,
        org_id=org_id or (principal.org_id if principal else None),
        actor_user_id=principal.user_id if principal else user_id,
        actor_api_key_id=principal.api_key_id if principal else None,
        target_type=target[0] if target else None,
        target_id=target[1] if target else None,
        ip=info.ip,
        user_agent=info.user_agent,
        request_id=info.request_id,
        details=details or {},
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class EventFilter:
    action: str | None = None
    org_id: str | None = None
    actor_user_id: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    filters: EventFilter,
    *,
    all_orgs: bool = False,
) -> Page[Any]:
    """Newest first. Organization admins see their organization; superadmins may see all."""
    if all_orgs:
        principal.require_superadmin()
        statement = select(AuditEvent)
    else:
        principal.require_role("admin")
        statement = select(AuditEvent).where(AuditEvent.org_id == principal.org_id)
    if filters.action:
        statement = statement.where(AuditEvent.action == filters.action)
    if filters.org_id:
        statement = statement.where(AuditEvent.org_id == filters.org_id)
    if filters.actor_user_id:
        statement = statement.where(AuditEvent.actor_user_id == filters.actor_user_id)
    if filters.target_id:
        statement = statement.where(AuditEvent.target_id == filters.target_id)
    if filters.outcome:
        statement = statement.where(AuditEvent.outcome == filters.outcome)
    if filters.since:
        statement = statement.where(AuditEvent.created_at >= filters.since)
    if filters.until:
        statement = statement.where(AuditEvent.created_at < filters.until)
    statement = statement.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    return await paginate(session, statement, page)
