"""Single sign-on through the API routes, end to end against the real OpenID provider of
tests/oidc_provider: just-in-time accounts, linking, group-to-role mapping, refusals."""

import pytest
from sqlalchemy import func, select

from atelier.audit.models import AuditEvent
from atelier.identity.models import User, UserIdentity
from tests.identity.factories import make_user
from tests.identity.oidc_fixtures import PROVIDER_NAME

BASE = f"/api/v1/auth/oidc/{PROVIDER_NAME}"


@pytest.fixture
def settings(make_settings, oidc_provider):
    return make_settings(oidc_providers=[oidc_provider.settings()])


@pytest.fixture
def provider_settings(app):
    return app.state.settings.oidc_providers[0]


async def sso(client, oidc_provider, login: str):
    started = await client.get(f"{BASE}/login")
    assert started.status_code == 302, started.text
    assert "atelier_oidc" in started.headers["set-cookie"]
    assert "HttpOnly" in started.headers["set-cookie"]
    params = await oidc_provider.log_in(started.headers["location"], login)
    return await client.get(f"{BASE}/callback", params=params)


async def me(client, response) -> dict:
    token = response.json()["access_token"]
    return (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).json()


async def test_first_sign_in_creates_the_account_and_maps_groups_to_a_role(
    client, oidc_provider, provider_settings, alice, db_session
):
    provider_settings.org_id = alice.org_id
    provider_settings.role_mapping = {"atelier-admins": "admin", "staff": "member"}
    response = await sso(client, oidc_provider, "alice")
    assert response.status_code == 200, response.text
    assert "atelier_oidc=" in response.headers["set-cookie"]  # the pending login is cleared
    who = await me(client, response)
    assert who["user"]["email"] == "alice@example.com"
    roles = {m["org_id"]: m["role"] for m in who["memberships"]}
    assert roles[alice.org_id] == "admin"  # highest of the mapped groups
    user = await db_session.scalar(select(User).where(User.email == "alice@example.com"))
    assert user.password_hash is None
    again = await sso(client, oidc_provider, "alice")
    assert (await me(client, again))["user"]["id"] == user.id
    links = await db_session.scalar(
        select(func.count()).select_from(UserIdentity).where(UserIdentity.user_id == user.id)
    )
    assert links == 1
    actions = [
        e.action
        for e in await db_session.scalars(
            select(AuditEvent)
            .where(AuditEvent.actor_user_id == user.id)
            .order_by(AuditEvent.created_at)
        )
    ]
    assert actions.count("auth.sso_sign_in") == 2
    assert "user.registered" in actions
    assert "member.added" in actions


async def test_users_without_mapped_groups_get_the_default_role(
    client, oidc_provider, provider_settings, alice
):
    provider_settings.org_id = alice.org_id
    provider_settings.role_mapping = {"atelier-admins": "admin"}
    provider_settings.default_role = "viewer"
    response = await sso(client, oidc_provider, "dave")
    who = await me(client, response)
    assert who["user"]["email"] == "dave.moreau@mail.example.com"
    assert {m["org_id"]: m["role"] for m in who["memberships"]}[alice.org_id] == "viewer"


async def test_an_existing_account_is_linked_when_the_provider_vouches_for_the_domain(
    client, oidc_provider, provider_settings, db_session
):
    existing = await make_user(db_session, email="alice@example.com", display_name="Alice")
    provider_settings.allowed_domains = ["example.com"]
    response = await sso(client, oidc_provider, "alice")
    assert (await me(client, response))["user"]["id"] == existing.id


async def test_an_existing_account_is_not_taken_over_by_an_unrestricted_provider(
    client, oidc_provider, db_session
):
    await make_user(db_session, email="alice@example.com", display_name="Alice")
    response = await sso(client, oidc_provider, "alice")
    assert response.status_code == 409
    assert response.json()["reason"] == "account-exists"
    assert await db_session.scalar(select(func.count()).select_from(UserIdentity)) == 0


async def test_a_disallowed_email_domain_is_refused_and_nothing_is_created(
    client, oidc_provider, provider_settings, db_session
):
    provider_settings.allowed_domains = ["example.com"]
    response = await sso(client, oidc_provider, "bob")
    assert response.status_code == 403
    assert await db_session.scalar(select(User).where(User.email == "bob@other.example")) is None


async def test_an_unverified_email_is_refused(client, oidc_provider):
    response = await sso(client, oidc_provider, "carol")
    assert response.status_code == 403


async def test_a_callback_without_the_browsers_pending_login_is_refused(client, oidc_provider):
    started = await client.get(f"{BASE}/login")
    params = await oidc_provider.log_in(started.headers["location"], "alice")
    client.cookies.clear()
    response = await client.get(f"{BASE}/callback", params=params)
    assert response.status_code == 400
    assert response.json()["reason"] == "no-pending-login"


async def test_a_failed_callback_still_clears_the_pending_login(client, oidc_provider):
    started = await client.get(f"{BASE}/login")
    params = await oidc_provider.log_in(started.headers["location"], "carol")  # unverified
    response = await client.get(f"{BASE}/callback", params=params)
    assert response.status_code == 403
    assert 'atelier_oidc=""' in response.headers["set-cookie"]
    assert "Max-Age=0" in response.headers["set-cookie"]


async def test_a_tampered_pending_login_cookie_is_refused(client, oidc_provider):
    started = await client.get(f"{BASE}/login")
    params = await oidc_provider.log_in(started.headers["location"], "alice")
    cookie = client.cookies.get("atelier_oidc")
    client.cookies.set("atelier_oidc", cookie[:-3] + "AAA", path=BASE.rsplit("/", 1)[0] + "/")
    response = await client.get(f"{BASE}/callback", params=params)
    assert response.status_code == 400


async def test_an_unknown_provider_is_404(client):
    assert (await client.get("/api/v1/auth/oidc/nobody/login")).status_code == 404
