"""Members, invitations and API keys through the web pages."""

import re

import httpx
import pytest

from tests.identity.factories import PASSWORD, join, make_user, personal_org_id
from tests.web.test_sign_in_pages import csrf_of, sign_in


@pytest.fixture
async def browser_factory(app):
    """Separate cookie jars, as separate people's browsers."""
    clients = []

    def make() -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def page_token(client, path: str) -> tuple[str, str]:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return page.text, csrf_of(page.text)


async def test_settings_pages_need_a_sign_in(client):
    for path in ("/settings/members", "/settings/api-keys"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={path}"


async def test_an_invitation_through_the_pages_from_link_to_membership(db_session, browser_factory):
    owner = await make_user(db_session, display_name="Owner")
    guest = await make_user(db_session, display_name="Guest")
    owner_browser, guest_browser = browser_factory(), browser_factory()
    await sign_in(owner_browser, owner.email)
    _, token = await page_token(owner_browser, "/settings/members")
    invited = await owner_browser.post(
        "/settings/members/invite",
        data={"email": guest.email, "role": "member", "csrf_token": token},
    )
    link = re.search(r'value="(http://[^"]+/invitations/invite_[^"]+)"', invited.text).group(1)
    path = link.split("http://127.0.0.1:8000", 1)[1]
    assert f'data-pending="{guest.email}"' in invited.text

    landing = await guest_browser.get(path)  # not signed in yet
    assert "Owner&#39;s workspace" in landing.text
    assert f'href="/login?next={path}"' in landing.text
    login_page = await guest_browser.get(f"/login?next={path}")
    signed = await guest_browser.post(
        "/login",
        data={
            "email": guest.email,
            "password": PASSWORD,
            "next": path,
            "csrf_token": csrf_of(login_page.text),
        },
    )
    assert signed.headers["location"] == path
    text, token = await page_token(guest_browser, path)
    assert 'data-action="accept"' in text
    accepted = await guest_browser.post(f"{path}/accept", data={"csrf_token": token})
    assert accepted.status_code == 303
    members = await guest_browser.get("/settings/members")
    assert f'data-member="{guest.email}"' in members.text
    assert f'data-member="{owner.email}"' in members.text
    again = await guest_browser.get(path)
    assert again.status_code == 404  # used


async def test_api_keys_are_shown_once_and_revoked_from_the_page(client, db_session):
    user = await make_user(db_session)
    await sign_in(client, user.email)
    _, token = await page_token(client, "/settings/api-keys")
    created = await client.post(
        "/settings/api-keys",
        data={"name": "laptop", "scopes": ["read", "write"], "csrf_token": token},
    )
    key = re.search(r'value="(atk_[^"]+)"', created.text).group(1)
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert me.json()["scopes"] == ["read", "write"]
    listing, token = await page_token(client, "/settings/api-keys")
    assert key not in listing
    key_id = re.search(r'action="/settings/api-keys/(key_\w+)/revoke"', listing).group(1)
    await client.post(f"/settings/api-keys/{key_id}/revoke", data={"csrf_token": token})
    assert (
        await client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 401


async def test_viewers_cannot_create_keys_from_the_page(client, db_session):
    owner = await make_user(db_session)
    viewer = await make_user(db_session, display_name="Viewer")
    org_id = await personal_org_id(db_session, owner)
    await join(db_session, viewer, org_id, "viewer")
    await sign_in(client, viewer.email)
    home = await client.get("/")
    await client.post("/session/org", data={"org_id": org_id, "csrf_token": csrf_of(home.text)})
    text, token = await page_token(client, "/settings/api-keys")
    assert "Viewers cannot create API keys" in text
    refused = await client.post("/settings/api-keys", data={"name": "x", "csrf_token": token})
    assert refused.status_code == 403


async def test_another_organizations_key_cannot_be_revoked_from_the_page(
    client, db_session, mallory
):
    key = await client.post("/api/v1/api-keys", json={"name": "m"}, headers=mallory.headers)
    user = await make_user(db_session)
    await sign_in(client, user.email)
    _, token = await page_token(client, "/settings/api-keys")
    response = await client.post(
        f"/settings/api-keys/{key.json()['id']}/revoke", data={"csrf_token": token}
    )
    assert response.status_code == 404


async def test_a_form_posted_without_a_session_sends_to_sign_in_and_back(client):
    token = csrf_of((await client.get("/login")).text)
    response = await client.post(
        "/settings/members/usr_x/role", data={"role": "viewer", "csrf_token": token}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/settings/members"
    unsigned = await client.post("/settings/api-keys", data={"name": "k"})
    assert unsigned.status_code == 403  # the CSRF check comes first
