"""Organizations, members and roles over HTTP."""

import pytest
from sqlalchemy import select

from atelier.audit.models import AuditEvent
from atelier.identity.models import Organization
from tests.identity.factories import join, make_user, sign_in


@pytest.fixture
async def team(db_session, client, alice):
    """Alice's organization with Bob as admin, Carol as member and Dave as viewer."""
    people = {}
    for name, role in (("bob", "admin"), ("carol", "member"), ("dave", "viewer")):
        user = await make_user(db_session, display_name=name.title())
        await join(db_session, user, alice.org_id, role)
        people[name] = await sign_in(client, user, alice.org_id)
    return people


async def test_creating_an_organization_makes_the_caller_owner(client, alice, db_session):
    response = await client.post(
        "/api/v1/orgs", json={"name": "Atelier Lyon"}, headers=alice.headers
    )
    assert response.status_code == 201
    org = response.json()
    assert org["id"].startswith("org_")
    listed = (await client.get("/api/v1/orgs", headers=alice.headers)).json()
    assert {(o["org_name"], o["role"]) for o in listed} >= {("Atelier Lyon", "owner")}
    [event] = list(
        await db_session.scalars(select(AuditEvent).where(AuditEvent.action == "org.created"))
    )
    assert event.org_id == org["id"]


async def test_the_org_header_selects_among_several(client, alice):
    other = (
        await client.post("/api/v1/orgs", json={"name": "Second"}, headers=alice.headers)
    ).json()
    me = await client.get("/api/v1/me", headers={**alice.headers, "X-Atelier-Org": other["id"]})
    assert me.json()["org_id"] == other["id"]


async def test_members_see_the_member_list_and_only_admins_rename(client, alice, team):
    members = (
        await client.get(f"/api/v1/orgs/{alice.org_id}/members", headers=team["dave"].headers)
    ).json()
    assert sorted(m["role"] for m in members) == ["admin", "member", "owner", "viewer"]
    refused = await client.patch(
        f"/api/v1/orgs/{alice.org_id}", json={"name": "Mine"}, headers=team["carol"].headers
    )
    assert refused.status_code == 403
    assert refused.json()["required_role"] == "admin"
    renamed = await client.patch(
        f"/api/v1/orgs/{alice.org_id}", json={"name": "Ours"}, headers=team["bob"].headers
    )
    assert renamed.json()["name"] == "Ours"


async def test_roles_change_and_the_change_is_audited(client, alice, team, db_session):
    carol = team["carol"].user.id
    response = await client.patch(
        f"/api/v1/orgs/{alice.org_id}/members/{carol}",
        json={"role": "admin"},
        headers=team["bob"].headers,
    )
    assert response.json()["role"] == "admin"
    [event] = list(
        await db_session.scalars(
            select(AuditEvent).where(AuditEvent.action == "member.role_changed")
        )
    )
    assert event.details == {"from": "member", "to": "admin"}
    assert event.actor_user_id == team["bob"].user.id


async def test_only_an_owner_grants_ownership(client, alice, team):
    carol = team["carol"].user.id
    by_admin = await client.patch(
        f"/api/v1/orgs/{alice.org_id}/members/{carol}",
        json={"role": "owner"},
        headers=team["bob"].headers,
    )
    assert by_admin.status_code == 403
    by_owner = await client.patch(
        f"/api/v1/orgs/{alice.org_id}/members/{carol}",
        json={"role": "owner"},
        headers=alice.headers,
    )
    assert by_owner.json()["role"] == "owner"


async def test_the_last_owner_can_neither_leave_nor_be_demoted(client, alice, team):
    me = alice.user.id
    demote = await client.patch(
        f"/api/v1/orgs/{alice.org_id}/members/{me}", json={"role": "admin"}, headers=alice.headers
    )
    assert demote.status_code == 409
    leave = await client.delete(f"/api/v1/orgs/{alice.org_id}/members/{me}", headers=alice.headers)
    assert leave.status_code == 409
    # Ownership transfer: make Bob owner, then Alice may step down.
    await client.patch(
        f"/api/v1/orgs/{alice.org_id}/members/{team['bob'].user.id}",
        json={"role": "owner"},
        headers=alice.headers,
    )
    assert (
        await client.delete(f"/api/v1/orgs/{alice.org_id}/members/{me}", headers=alice.headers)
    ).status_code == 204


async def test_members_may_leave_but_not_remove_others(client, alice, team):
    dave = team["dave"].user.id
    refused = await client.delete(
        f"/api/v1/orgs/{alice.org_id}/members/{dave}", headers=team["carol"].headers
    )
    assert refused.status_code == 403
    left = await client.delete(
        f"/api/v1/orgs/{alice.org_id}/members/{dave}", headers=team["dave"].headers
    )
    assert left.status_code == 204
    gone = await client.get("/api/v1/me", headers=team["dave"].headers)
    assert gone.status_code == 404  # no longer in that organization


async def test_usage_reports_every_meter_against_the_plan(client, alice):
    response = await client.get(f"/api/v1/orgs/{alice.org_id}/usage", headers=alice.headers)
    body = response.json()
    assert body["plan_id"] == "trial"
    meters = {m["meter"]: (m["used"], m["limit"]) for m in body["meters"]}
    assert meters["predictions"] == (0, 100_000)
    assert set(meters) == {
        "compute_seconds",
        "image_generations",
        "photo_processings",
        "predictions",
    }


async def test_the_member_limit_of_the_plan_is_a_402(db_session, alice):
    from atelier.core.context import NO_REQUEST
    from atelier.core.errors import QuotaExceeded
    from atelier.core.principal import Principal
    from atelier.identity import orgs

    org = await db_session.get(Organization, alice.org_id)
    org.plan_id = "free"  # three members at most
    await db_session.commit()
    owner = Principal(org_id=alice.org_id, role="owner", user_id=alice.user.id)
    for n in range(2):
        user = await make_user(db_session, display_name=f"Extra {n}")
        await orgs.add_member(db_session, owner, user_id=user.id, role="member", info=NO_REQUEST)
    fourth = await make_user(db_session, display_name="Fourth")
    with pytest.raises(QuotaExceeded) as exc:
        await orgs.add_member(db_session, owner, user_id=fourth.id, role="member", info=NO_REQUEST)
    assert exc.value.extra == {"meter": "members", "limit": 3, "used": 3}
