"""Signing in to the web UI: forms with CSRF tokens, the session cookie, sign-out, the
organization switcher, and single sign-on landing in a web session."""

import re

import pytest

from tests.identity.factories import PASSWORD, make_user, unique_email
from tests.identity.oidc_fixtures import PROVIDER_NAME


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html).group(1)


async def form_token(client, path: str = "/login") -> str:
    page = await client.get(path)
    assert page.status_code == 200
    return csrf_of(page.text)


async def sign_in(client, email: str, password: str = PASSWORD):
    token = await form_token(client)
    return await client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )


async def test_signing_in_sets_a_private_session_cookie(client, db_session):
    user = await make_user(db_session, display_name="Ada Web")
    response = await sign_in(client, user.email)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("atelier_session=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    home = await client.get("/")
    assert 'data-user="' + user.email + '"' in home.text
    assert "Ada Web" in home.text


async def test_a_form_without_its_csrf_token_is_refused(client, db_session):
    user = await make_user(db_session)
    await client.get("/login")  # has the CSRF cookie, but sends no token
    response = await client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 403
    assert response.json()["reason"] == "csrf"
    forged = await client.post(
        "/login", data={"email": user.email, "password": PASSWORD, "csrf_token": "0" * 64}
    )
    assert forged.status_code == 403
    assert "atelier_session" not in client.cookies


async def test_a_token_from_another_browser_does_not_fit_this_one(app, client, db_session):
    import httpx

    user = await make_user(db_session)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        token = await form_token(other)  # the attacker's own page and cookie
    await client.get("/login")
    response = await client.post(
        "/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 403


async def test_a_wrong_password_shows_the_form_again_in_the_visitors_language(client, db_session):
    user = await make_user(db_session)
    client.cookies.set("atelier_lang", "fr")
    response = await sign_in(client, user.email, "not the password at all")
    assert response.status_code == 401
    assert "Adresse e-mail ou mot de passe incorrect" in response.text
    assert f'value="{user.email}"' in response.text


async def test_signing_up_signs_in(client, db_session):
    token = await form_token(client, "/signup")
    email = unique_email("webby")
    response = await client.post(
        "/signup",
        data={"email": email, "password": PASSWORD, "display_name": "Webby", "csrf_token": token},
    )
    assert response.status_code == 303
    home = await client.get("/")
    assert f'data-user="{email}"' in home.text
    assert "Webby&#39;s workspace" in home.text  # the organization switcher


async def test_a_weak_password_on_sign_up_is_explained(client):
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={"email": unique_email(), "password": "abc", "display_name": "W", "csrf_token": token},
    )
    assert response.status_code == 422
    assert "Use at least 10 characters" in response.text


async def test_signing_out_ends_the_session_for_good(client, db_session):
    user = await make_user(db_session)
    await sign_in(client, user.email)
    session_cookie = client.cookies.get("atelier_session")
    home = await client.get("/")
    response = await client.post("/logout", data={"csrf_token": csrf_of(home.text)})
    assert response.status_code == 303
    client.cookies.set("atelier_session", session_cookie)  # replayed after sign-out
    assert "data-user" not in (await client.get("/")).text


async def test_the_switcher_moves_between_the_users_organizations_only(client, db_session, mallory):
    user = await make_user(db_session, display_name="Switcher")
    await sign_in(client, user.email)
    home = await client.get("/")
    created = await client.post(
        "/api/v1/orgs",
        json={"name": "Second Org"},
        headers={"Authorization": f"Bearer {(await _api_token(client, user.email))}"},
    )
    second = created.json()["id"]
    moved = await client.post(
        "/session/org", data={"org_id": second, "csrf_token": csrf_of(home.text)}
    )
    assert moved.status_code == 303
    assert f'<option value="{second}" selected>' in (await client.get("/")).text
    foreign = await client.post(
        "/session/org", data={"org_id": mallory.org_id, "csrf_token": csrf_of(home.text)}
    )
    assert foreign.status_code == 404


async def _api_token(client, email: str) -> str:
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    return response.json()["access_token"]


class TestSingleSignOn:
    @pytest.fixture
    def settings(self, make_settings, oidc_provider):
        return make_settings(oidc_providers=[oidc_provider.settings()])

    async def test_the_login_page_offers_each_provider_and_sso_lands_in_a_web_session(
        self, client, oidc_provider
    ):
        page = await client.get("/login")
        assert f'data-provider="{PROVIDER_NAME}"' in page.text
        started = await client.get(f"/api/v1/auth/oidc/{PROVIDER_NAME}/login?web=1")
        params = await oidc_provider.log_in(started.headers["location"], "dave")
        back = await client.get(f"/api/v1/auth/oidc/{PROVIDER_NAME}/callback", params=params)
        assert back.status_code == 303
        assert back.headers["location"] == "/"
        home = await client.get("/")
        assert 'data-user="dave.moreau@mail.example.com"' in home.text
