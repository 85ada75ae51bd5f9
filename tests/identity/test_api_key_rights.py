"""An API key never does more than its creator may do now: its rights are the intersection of
its scopes and the creator's current role, and removing or disabling the creator revokes it."""

import uuid

import pytest
from sqlalchemy import select

from atelier.audit.models import AuditEvent
from atelier.identity.models import ApiKey, Membership, User
from tests.identity.factories import join, make_user, sign_in

KEYS = "/api/v1/api-keys"
CSV = b"size,price\n50,100\n70,140\n"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def bob(client, db_session, alice):
    """An admin of Alice's organization, signed in there."""
    user = await make_user(db_session, display_name="Bob")
    await join(db_session, user, alice.org_id, "admin")
    return await sign_in(client, user, alice.org_id)


async def make_key(client, who, scopes: list[str]) -> dict:
    created = await client.post(KEYS, json={"name": "ci", "scopes": scopes}, headers=who.headers)
    assert created.status_code == 201, created.text
    return created.json()


async def upload(client, key: str):
    return await client.post(
        "/api/v1/datasets",
        data={"name": f"homes {uuid.uuid4().hex[:8]}"},
        files={"file": ("homes.csv", CSV, "text/csv")},
        headers=bearer(key),
    )


async def invite_admin(client, key: str, org_id: str):
    return await client.post(
        f"/api/v1/orgs/{org_id}/invitations",
        json={"email": "accomplice@example.com", "role": "admin"},
        headers=bearer(key),
    )


async def revocations(session, key_id: str) -> list[AuditEvent]:
    return list(
        await session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "api_key.revoked", AuditEvent.target_id == key_id
            )
        )
    )


async def test_a_demoted_admins_key_acts_as_a_viewer(client, alice, bob):
    key = (await make_key(client, bob, ["read", "write", "admin"]))["key"]
    audit_log = await client.get("/api/v1/audit-events", headers=bearer(key))
    assert audit_log.status_code == 200  # the key worked with the admin's rights

    demoted = await client.patch(
        f"/api/v1/orgs/{alice.org_id}/members/{bob.user.id}",
        json={"role": "viewer"},
        headers=alice.headers,
    )
    assert demoted.status_code == 200

    me = (await client.get("/api/v1/me", headers=bearer(key))).json()
    assert (me["role"], me["scopes"]) == ("viewer", ["read"])
    assert (await client.get("/api/v1/audit-events", headers=bearer(key))).status_code == 403
    assert (await upload(client, key)).status_code == 403
    assert (await invite_admin(client, key, alice.org_id)).status_code == 403
    assert (await client.get(f"/api/v1/orgs/{alice.org_id}", headers=bearer(key))).is_success


async def test_a_key_keeps_the_narrower_of_its_scopes_and_its_creators_role(
    client, alice, bob, db_session
):
    key = (await make_key(client, bob, ["read"]))["key"]
    await db_session.execute(
        Membership.__table__.update()
        .where(Membership.user_id == bob.user.id, Membership.org_id == alice.org_id)
        .values(role="owner")
    )
    await db_session.commit()
    me = (await client.get("/api/v1/me", headers=bearer(key))).json()
    assert (me["role"], me["scopes"]) == ("viewer", ["read"])  # a promotion adds nothing


@pytest.mark.parametrize("leaves", [False, True], ids=["removed", "leaves"])
async def test_removing_the_creator_refuses_and_revokes_their_keys(
    client, alice, bob, db_session, leaves
):
    key = await make_key(client, bob, ["read", "write", "admin"])
    other = await make_key(client, alice, ["read"])
    who = bob if leaves else alice
    removed = await client.delete(
        f"/api/v1/orgs/{alice.org_id}/members/{bob.user.id}", headers=who.headers
    )
    assert removed.status_code == 204

    refused = await client.get("/api/v1/me", headers=bearer(key["key"]))
    assert refused.status_code == 401
    assert (await client.get("/api/v1/audit-events", headers=bearer(key["key"]))).status_code == 401
    assert (await upload(client, key["key"])).status_code == 401
    assert (await invite_admin(client, key["key"], alice.org_id)).status_code == 401
    row = await db_session.get(ApiKey, key["id"])
    await db_session.refresh(row)
    assert row.revoked_at is not None
    [event] = await revocations(db_session, key["id"])
    assert event.org_id == alice.org_id
    assert event.details == {"reason": "creator_removed", "creator": bob.user.id}
    # Everyone else's keys are untouched.
    assert (await client.get("/api/v1/me", headers=bearer(other["key"]))).status_code == 200


async def test_a_disabled_users_key_cannot_write_and_is_revoked(client, alice, db_session):
    operator_user = await make_user(db_session, display_name="Operator")
    operator_user.is_superadmin = True
    await db_session.commit()
    operator = await sign_in(client, operator_user, alice.org_id)
    key = await make_key(client, alice, ["read", "write"])
    assert (await upload(client, key["key"])).status_code == 201

    disabled = await client.patch(
        f"/api/v1/admin/users/{alice.user.id}",
        json={"is_active": False},
        headers={"Authorization": operator.headers["Authorization"]},
    )
    assert disabled.status_code == 200

    assert (await upload(client, key["key"])).status_code == 401
    row = await db_session.get(ApiKey, key["id"])
    await db_session.refresh(row)
    assert row.revoked_at is not None
    [event] = await revocations(db_session, key["id"])
    assert event.details == {"reason": "creator_disabled", "creator": alice.user.id}
    assert event.actor_user_id == operator_user.id


@pytest.mark.parametrize("change", ["membership_gone", "creator_disabled"])
async def test_a_key_is_refused_whenever_its_creator_lost_access(client, alice, db_session, change):
    """Even a key that was never revoked (a change made outside the services, or before they
    revoked keys) stops working: the check is made on every request."""
    key = await make_key(client, alice, ["read"])
    if change == "membership_gone":
        await db_session.delete(await db_session.get(Membership, (alice.org_id, alice.user.id)))
    else:
        (await db_session.get(User, alice.user.id)).is_active = False
    await db_session.commit()
    refused = await client.get("/api/v1/me", headers=bearer(key["key"]))
    assert refused.status_code == 401
    assert "no longer" in refused.json()["detail"]


async def test_admins_list_and_revoke_every_key_members_only_their_own(
    client, alice, bob, db_session
):
    member_user = await make_user(db_session, display_name="Member")
    await join(db_session, member_user, alice.org_id, "member")
    member = await sign_in(client, member_user, alice.org_id)
    mine = await make_key(client, member, ["read"])
    bobs = await make_key(client, bob, ["admin"])

    listed = (await client.get(KEYS, headers=alice.headers)).json()
    assert {k["id"] for k in listed} == {mine["id"], bobs["id"]}
    assert {k["created_by"] for k in listed} == {member_user.id, bob.user.id}
    assert [k["id"] for k in (await client.get(KEYS, headers=member.headers)).json()] == [
        mine["id"]
    ]
    assert (await client.delete(f"{KEYS}/{bobs['id']}", headers=member.headers)).status_code == 403
    assert (await client.delete(f"{KEYS}/{bobs['id']}", headers=alice.headers)).status_code == 204
    assert (await client.get("/api/v1/me", headers=bearer(bobs["key"]))).status_code == 401
