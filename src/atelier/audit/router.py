"""The audit log API: organization admins read their organization's events."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from atelier.audit import service
from atelier.audit.schemas import AuditEventRead
from atelier.core.deps import DbSession
from atelier.core.pagination import Page, PageParams
from atelier.core.routing import API_PREFIX, operation
from atelier.identity.deps import CurrentPrincipal

router = APIRouter(prefix=f"{API_PREFIX}/audit-events", tags=["audit"])

Text = Annotated[str | None, Query(max_length=64)]


@router.get("", response_model=Page[AuditEventRead], **operation("audit_event", "read"))
async def list_events(
    principal: CurrentPrincipal,
    session: DbSession,
    page: PageParams,
    action: Text = None,
    actor_user_id: Text = None,
    target_id: Text = None,
    outcome: Annotated[str | None, Query(pattern="^(success|failure)$")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
):
    """Newest first, for admins of the organization."""
    filters = service.EventFilter(
        action=action,
        actor_user_id=actor_user_id,
        target_id=target_id,
        outcome=outcome,
        since=since,
        until=until,
    )
    return await service.list_events(session, principal, page, filters)
