"""The superadmin API: users, organizations, plans, usage and audit across organizations."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from atelier.audit.models import AuditEvent
from atelier.identity.models import User
from atelier.plans import service as plans_service
from tests.identity.factories import make_user, personal_org_id, sign_in


@pytest.fixture
async def operator(client, db_session):
    user = await make_user(db_session, display_name="Operator")
    user.is_superadmin = True
    await db_session.commit()
    return await sign_in(client, user, await personal_org_id(db_session, user))


async def admin_events(session, action: str) -> list[AuditEvent]:
    return list(await session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


async def test_ordinary_users_get_403_on_every_admin_route(app, client, alice):
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/api/v1/admin/"):
            continue
        for method in operations:
            url = path.replace("{user_id}", alice.user.id).replace("{org_id}", alice.org_id)
            url = url.replace("{plan_id}", "trial")
            response = await client.request(method.upper(), url, headers=alice.headers, json={})
            assert response.status_code == 403, f"{method} {url}"


async def test_operators_list_and_search_users(client, operator, alice):
    page = (
        await client.get(
            "/api/v1/admin/users", params={"search": "alice"}, headers=operator.headers
        )
    ).json()
    assert [u["id"] for u in page["items"]] == [alice.user.id]
    assert page["total"] == 1


async def test_disabling_a_user_ends_their_access_and_is_audited(
    client, operator, alice, db_session
):
    response = await client.patch(
        f"/api/v1/admin/users/{alice.user.id}", json={"is_active": False}, headers=operator.headers
    )
    assert response.json()["is_active"] is False
    assert (await client.get("/api/v1/me", headers=alice.headers)).status_code == 401
    [event] = await admin_events(db_session, "admin.user_updated")
    assert (event.actor_user_id, event.target_id) == (operator.user.id, alice.user.id)
    assert event.details == {"is_active": [True, False]}


async def test_operators_cannot_demote_themselves(client, operator):
    response = await client.patch(
        f"/api/v1/admin/users/{operator.user.id}",
        json={"is_superadmin": False},
        headers=operator.headers,
    )
    assert response.status_code == 409


async def test_plan_changes_are_audited_and_respect_member_counts(
    client, operator, alice, db_session
):
    moved = await client.patch(
        f"/api/v1/admin/orgs/{alice.org_id}", json={"plan_id": "pro"}, headers=operator.headers
    )
    assert moved.json()["plan_id"] == "pro"
    [event] = await admin_events(db_session, "admin.plan_changed")
    assert event.details == {"from": "trial", "to": "pro"}
    unknown = await client.patch(
        f"/api/v1/admin/orgs/{alice.org_id}", json={"plan_id": "platinum"}, headers=operator.headers
    )
    assert unknown.status_code == 404


async def test_a_move_to_a_trial_plan_starts_a_trial_that_ends(client, operator, alice, app):
    """Moving an organization to a trial plan sets when the trial ends (a null end never ends);
    moving it to a paid plan clears it."""
    paid = await client.patch(
        f"/api/v1/admin/orgs/{alice.org_id}", json={"plan_id": "pro"}, headers=operator.headers
    )
    assert paid.json()["trial_ends_at"] is None
    trial = await client.patch(
        f"/api/v1/admin/orgs/{alice.org_id}", json={"plan_id": "trial"}, headers=operator.headers
    )
    ends = datetime.fromisoformat(trial.json()["trial_ends_at"])
    days = (ends - app.state.clock.now()) / timedelta(days=1)
    assert 13.9 < days <= 14, days


async def test_operators_edit_plan_limits(client, operator, db_session):
    response = await client.put(
        "/api/v1/admin/plans/free",
        json={"monthly_predictions": 50, "max_storage_bytes": None},
        headers=operator.headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["monthly_predictions"], body["max_storage_bytes"]) == (50, None)
    assert body["max_members"] == 3  # untouched
    bad = await client.put(
        "/api/v1/admin/plans/free", json={"monthly_predictions": -1}, headers=operator.headers
    )
    assert bad.status_code == 422
    unknown_field = await client.put(
        "/api/v1/admin/plans/free", json={"colour": "red"}, headers=operator.headers
    )
    assert unknown_field.status_code == 422
    [event] = await admin_events(db_session, "admin.plan_updated")
    assert event.details["after"] == {"monthly_predictions": 50, "max_storage_bytes": None}


async def test_operators_see_usage_and_every_organizations_audit_log(
    client, operator, alice, mallory, db_session
):
    await plans_service.record(db_session, alice.org_id, "predictions", 12)
    await db_session.commit()
    usage = (await client.get("/api/v1/admin/usage", headers=operator.headers)).json()
    assert {(r["org_id"], r["meter"], r["amount"]) for r in usage["items"]} >= {
        (alice.org_id, "predictions", 12)
    }
    events = (
        await client.get(
            "/api/v1/admin/audit-events",
            params={"action": "user.registered"},
            headers=operator.headers,
        )
    ).json()
    orgs = {e["org_id"] for e in events["items"]}
    assert {alice.org_id, mallory.org_id} <= orgs
    users = (await client.get("/api/v1/admin/orgs", headers=operator.headers)).json()
    assert users["total"] >= 3


async def test_a_superadmin_api_key_is_not_an_operator(client, operator, db_session):
    key = (
        await client.post(
            "/api/v1/api-keys", json={"name": "k", "scopes": ["admin"]}, headers=operator.headers
        )
    ).json()["key"]
    response = await client.get("/api/v1/admin/users", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
    assert await db_session.get(User, operator.user.id)
