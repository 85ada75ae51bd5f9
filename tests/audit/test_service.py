import pytest
from sqlalchemy import select

from atelier.audit import service
from atelier.audit.models import AuditEvent
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Forbidden
from atelier.core.pagination import PageRequest
from atelier.core.principal import Principal

INFO = RequestInfo(ip="203.0.113.9", user_agent="pytest", request_id="req-audit-1")
ADMIN = Principal(org_id="org_a", role="admin", user_id="usr_admin")


async def _seed(session):
    async with transaction(session):
        for n in range(5):
            await service.record(
                session, "thing.done", info=INFO, principal=ADMIN, target=("thing", f"t{n}")
            )
        await service.record(
            session, "auth.sign_in", info=INFO, user_id="usr_x", org_id="org_a", outcome="failure"
        )
        await service.record(session, "thing.done", info=INFO, org_id="org_b", user_id="usr_b")


async def test_events_carry_actor_request_and_target(db_session):
    await _seed(db_session)
    event = await db_session.scalar(select(AuditEvent).where(AuditEvent.target_id == "t0"))
    assert (event.actor_user_id, event.org_id, event.ip, event.request_id) == (
        "usr_admin",
        "org_a",
        "203.0.113.9",
        "req-audit-1",
    )
    assert event.id.startswith("evt_")


async def test_admins_page_through_their_organization_with_filters(db_session):
    await _seed(db_session)
    page = await service.list_events(
        db_session, ADMIN, PageRequest(limit=2, offset=0), service.EventFilter()
    )
    assert page.total == 6  # org_b's event is not there
    assert len(page.items) == 2
    failures = await service.list_events(
        db_session, ADMIN, PageRequest(), service.EventFilter(outcome="failure")
    )
    assert [e.action for e in failures.items] == ["auth.sign_in"]
    by_target = await service.list_events(
        db_session, ADMIN, PageRequest(), service.EventFilter(target_id="t3")
    )
    assert by_target.total == 1


async def test_members_cannot_read_the_audit_log(db_session):
    member = Principal(org_id="org_a", role="member", user_id="usr_m")
    with pytest.raises(Forbidden):
        await service.list_events(db_session, member, PageRequest(), service.EventFilter())


async def test_only_superadmins_see_every_organization(db_session):
    await _seed(db_session)
    with pytest.raises(Forbidden):
        await service.list_events(
            db_session, ADMIN, PageRequest(), service.EventFilter(), all_orgs=True
        )
    operator = Principal(org_id="org_x", role="viewer", user_id="usr_op", is_superadmin=True)
    page = await service.list_events(
        db_session, operator, PageRequest(), service.EventFilter(), all_orgs=True
    )
    assert page.total >= 7


async def test_the_api_offers_no_way_to_change_or_delete_events(app, client, alice):
    operations = app.openapi()["paths"]["/api/v1/audit-events"]
    assert set(operations) == {"get"}
    assert not [p for p in app.openapi()["paths"] if p.startswith("/api/v1/audit-events/")]
    response = await client.get(
        "/api/v1/audit-events?action=user.registered", headers=alice.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 1
    assert body["items"][0]["target_id"] == alice.user.id
