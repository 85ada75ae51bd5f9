"""Invitations over HTTP: invite, accept with the right account, expiry, one use, plan limit."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from atelier.audit.models import AuditEvent
from atelier.identity.models import Invitation, Organization
from tests.identity.factories import PASSWORD, make_user, sign_in, unique_email


def invitations_url(org_id: str) -> str:
    return f"/api/v1/orgs/{org_id}/invitations"


async def invite(client, inviter, email: str, role: str = "member") -> dict:
    response = await client.post(
        invitations_url(inviter.org_id),
        json={"email": email, "role": role},
        headers=inviter.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


async def test_an_invited_user_joins_with_the_role_and_it_is_audited(client, alice, db_session):
    bob = await make_user(db_session, display_name="Bob")
    created = await invite(client, alice, bob.email.upper())
    assert created["email"] == bob.email
    assert created["link"].startswith("http://127.0.0.1:8000/invitations/invite_")
    signed = await sign_in(client, bob, "unused")
    joined = await client.post(
        "/api/v1/invitations/accept",
        json={"token": token_of(created["link"])},
        headers={"Authorization": f"Bearer {signed.token}"},
    )
    assert joined.status_code == 200, joined.text
    assert (joined.json()["org_id"], joined.json()["role"]) == (alice.org_id, "member")
    members = (
        await client.get(f"/api/v1/orgs/{alice.org_id}/members", headers=alice.headers)
    ).json()
    assert {m["email"]: m["role"] for m in members}[bob.email] == "member"
    actions = [
        e.action
        for e in await db_session.scalars(
            select(AuditEvent)
            .where(AuditEvent.org_id == alice.org_id)
            .order_by(AuditEvent.created_at)
        )
    ]
    assert actions[-3:] == ["invitation.created", "invitation.accepted", "member.added"]
    # The link worked once.
    again = await client.post(
        "/api/v1/invitations/accept",
        json={"token": token_of(created["link"])},
        headers={"Authorization": f"Bearer {signed.token}"},
    )
    assert again.status_code == 404


async def test_an_invitation_for_another_email_is_refused_and_audited(
    client, alice, mallory, db_session
):
    created = await invite(client, alice, unique_email("someone"))
    response = await client.post(
        "/api/v1/invitations/accept",
        json={"token": token_of(created["link"])},
        headers={"Authorization": f"Bearer {mallory.token}"},
    )
    assert response.status_code == 403
    [event] = list(
        await db_session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "invitation.accepted", AuditEvent.outcome == "failure"
            )
        )
    )
    assert event.details == {"reason": "other_email"}
    members = (
        await client.get(f"/api/v1/orgs/{alice.org_id}/members", headers=alice.headers)
    ).json()
    assert mallory.user.id not in [m["user_id"] for m in members]


async def test_an_expired_invitation_says_so(client, alice, db_session):
    bob = await make_user(db_session)
    created = await invite(client, alice, bob.email)
    row = await db_session.get(Invitation, created["id"])
    row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    await db_session.commit()
    signed = await sign_in(client, bob, "unused")
    response = await client.post(
        "/api/v1/invitations/accept",
        json={"token": token_of(created["link"])},
        headers={"Authorization": f"Bearer {signed.token}"},
    )
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/invitation-expired"


@pytest.mark.parametrize("token", ["invite_forged", "x", "invite_" + "A" * 43])
async def test_forged_invitation_tokens_are_404(client, mallory, token):
    response = await client.post(
        "/api/v1/invitations/accept",
        json={"token": token},
        headers={"Authorization": f"Bearer {mallory.token}"},
    )
    assert response.status_code == 404


async def test_revoked_and_replaced_invitations_stop_working(client, alice, db_session):
    bob = await make_user(db_session)
    first = await invite(client, alice, bob.email)
    second = await invite(client, alice, bob.email, role="viewer")  # replaces the first
    pending = (await client.get(invitations_url(alice.org_id), headers=alice.headers)).json()
    assert [p["id"] for p in pending] == [second["id"]]
    assert (
        await client.delete(
            f"{invitations_url(alice.org_id)}/{second['id']}", headers=alice.headers
        )
    ).status_code == 204
    signed = await sign_in(client, bob, "unused")
    for created in (first, second):
        response = await client.post(
            "/api/v1/invitations/accept",
            json={"token": token_of(created["link"])},
            headers={"Authorization": f"Bearer {signed.token}"},
        )
        assert response.status_code == 404


async def test_only_admins_invite_and_only_owners_invite_owners(client, alice, db_session):
    from tests.identity.factories import join

    carol = await make_user(db_session)
    await join(db_session, carol, alice.org_id, "member")
    member = await sign_in(client, carol, alice.org_id)
    refused = await client.post(
        invitations_url(alice.org_id), json={"email": unique_email()}, headers=member.headers
    )
    assert refused.status_code == 403
    dan = await make_user(db_session)
    await join(db_session, dan, alice.org_id, "admin")
    admin = await sign_in(client, dan, alice.org_id)
    owner_invite = await client.post(
        invitations_url(alice.org_id),
        json={"email": unique_email(), "role": "owner"},
        headers=admin.headers,
    )
    assert owner_invite.status_code == 403


async def test_inviting_a_member_again_is_a_conflict(client, alice):
    response = await client.post(
        invitations_url(alice.org_id), json={"email": alice.user.email}, headers=alice.headers
    )
    assert response.status_code == 409


async def test_joining_past_the_plans_member_limit_is_a_402(client, alice, db_session):
    org = await db_session.get(Organization, alice.org_id)
    org.plan_id = "free"  # three members
    await db_session.commit()
    for n in range(2):
        user = await make_user(db_session, display_name=f"Member {n}")
        created = await invite(client, alice, user.email)
        signed = await sign_in(client, user, "unused")
        ok = await client.post(
            "/api/v1/invitations/accept",
            json={"token": token_of(created["link"])},
            headers={"Authorization": f"Bearer {signed.token}"},
        )
        assert ok.status_code == 200
    fourth = await make_user(db_session, display_name="Fourth")
    created = await invite(client, alice, fourth.email)
    signed = await sign_in(client, fourth, "unused")
    refused = await client.post(
        "/api/v1/invitations/accept",
        json={"token": token_of(created["link"])},
        headers={"Authorization": f"Bearer {signed.token}"},
    )
    assert refused.status_code == 402
    body = refused.json()
    assert (body["meter"], body["limit"], body["used"]) == ("members", 3, 3)


class TestInviteOnlyRegistration:
    @pytest.fixture
    def settings(self, make_settings):
        return make_settings(auth={"registration": "invite"})

    async def test_sign_up_needs_an_invitation_to_that_address(self, client, alice):
        email = unique_email("newcomer")
        body = {"email": email, "password": PASSWORD, "display_name": "Newcomer"}
        assert (await client.post("/api/v1/auth/register", json=body)).status_code == 403
        created = await invite(client, alice, email)
        other = {**body, "email": unique_email("other"), "invitation": token_of(created["link"])}
        assert (await client.post("/api/v1/auth/register", json=other)).status_code == 403
        joined = await client.post(
            "/api/v1/auth/register", json={**body, "invitation": token_of(created["link"])}
        )
        assert joined.status_code == 201, joined.text
        members = (
            await client.get(f"/api/v1/orgs/{alice.org_id}/members", headers=alice.headers)
        ).json()
        assert email in [m["email"] for m in members]
