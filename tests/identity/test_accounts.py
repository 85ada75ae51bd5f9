"""Sign-up, sign-in, tokens and /me over HTTP."""

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import select

from atelier.audit.models import AuditEvent
from atelier.identity.deps import TOKEN_URL
from atelier.identity.models import RefreshToken
from atelier.identity.tokens import ACCESS_TYP, AUDIENCE
from tests.identity.factories import PASSWORD, make_user, unique_email

REGISTER = "/api/v1/auth/register"


async def events(session, action: str) -> list[AuditEvent]:
    return list(await session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


async def test_sign_up_creates_the_user_and_a_personal_organization(client, db_session):
    email = unique_email("Grace").replace("grace", "Grace")
    response = await client.post(
        REGISTER, json={"email": email, "password": PASSWORD, "display_name": "Grace Hopper"}
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["email"] == email.lower()
    assert user["id"].startswith("usr_")
    assert "password" not in response.text
    tokens = (await client.post(TOKEN_URL, data={"username": email, "password": PASSWORD})).json()
    me = (
        await client.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    ).json()
    assert me["kind"] == "user"
    assert me["user"]["id"] == user["id"]
    [membership] = me["memberships"]
    assert (membership["role"], membership["is_personal"]) == ("owner", True)
    assert me["org_id"] == membership["org_id"]
    org = (
        await client.get(
            f"/api/v1/orgs/{me['org_id']}",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
    ).json()
    assert org["plan_id"] == "trial"
    assert org["trial_ends_at"] is not None
    registered = [
        e for e in await events(db_session, "user.registered") if e.target_id == user["id"]
    ]
    assert len(registered) == 1


async def test_an_email_is_one_account_whatever_its_case(client, db_session):
    email = unique_email()
    await make_user(db_session, email=email)
    response = await client.post(
        REGISTER, json={"email": email.upper(), "password": PASSWORD, "display_name": "Twin"}
    )
    assert response.status_code == 409
    assert response.json()["field"] == "email"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "display_name": "X"}, "/body/email"),
        (
            {"email": "a@example.com", "password": PASSWORD, "display_name": "x" * 101},
            "/body/display_name",
        ),
        (
            {"email": "a@example.com", "password": PASSWORD, "display_name": "Eve\u202eevil"},
            "/body/display_name",
        ),
        (
            {"email": "a@example.com", "password": PASSWORD, "display_name": "   "},
            "/body/display_name",
        ),
        ({"email": "a@example.com", "password": "short", "display_name": "Al"}, "/body/password"),
        (
            {"email": "a@example.com", "password": "password1234", "display_name": "Al"},
            "/body/password",
        ),
        (
            {"email": "a@example.com", "password": 12345678901, "display_name": "Al"},
            "/body/password",
        ),
    ],
)
async def test_bad_sign_ups_are_422_and_create_nothing(client, db_session, body, pointer):
    before = len(await events(db_session, "user.registered"))
    response = await client.post(REGISTER, json=body)
    assert response.status_code == 422, response.text
    assert pointer in [e["pointer"] for e in response.json()["errors"]]
    assert len(await events(db_session, "user.registered")) == before


class TestClosedRegistration:
    @pytest.fixture
    def settings(self, make_settings):
        return make_settings(auth={"registration": "closed"})

    async def test_sign_up_is_refused(self, client):
        response = await client.post(
            REGISTER, json={"email": unique_email(), "password": PASSWORD, "display_name": "A"}
        )
        assert response.status_code == 403


async def test_sign_in_failures_say_nothing_about_the_account(client, db_session):
    user = await make_user(db_session)
    wrong_password = await client.post(
        TOKEN_URL, data={"username": user.email, "password": "x" * 12}
    )
    stranger = unique_email()
    unknown_email = await client.post(TOKEN_URL, data={"username": stranger, "password": "x" * 12})
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json()["detail"] == unknown_email.json()["detail"]
    failures = [
        e
        for e in await events(db_session, "auth.sign_in")
        if e.details.get("email") in (user.email, stranger)
    ]
    assert [(e.outcome, e.actor_user_id) for e in failures] == [
        ("failure", user.id),
        ("failure", None),
    ]
    assert all(e.ip and e.request_id for e in failures)


async def test_refresh_rotates_and_a_reused_token_ends_the_whole_sign_in(client, db_session):
    user = await make_user(db_session)
    first = (
        await client.post(TOKEN_URL, data={"username": user.email, "password": PASSWORD})
    ).json()
    second = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    # The old token comes back (stolen copy): refused, and the family is revoked.
    reuse = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401
    assert "already used" in reuse.json()["detail"]
    after = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert after.status_code == 401
    [event] = await events(db_session, "auth.refresh_reuse")
    assert (event.outcome, event.actor_user_id) == ("failure", user.id)


async def test_logout_revokes_the_refresh_token(client, db_session):
    user = await make_user(db_session)
    pair = (
        await client.post(TOKEN_URL, data={"username": user.email, "password": PASSWORD})
    ).json()
    assert (
        await client.post("/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    ).status_code == 204
    again = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 401


async def sign_in_id(session, user_id: str) -> str:
    """The sign-in (refresh-token family) a user's token pair belongs to."""
    return await session.scalar(
        select(RefreshToken.family_id).where(RefreshToken.user_id == user_id)
    )


def _forge(app, **changes) -> str:
    key = app.state.tokens.keys[0]
    now = datetime.now(UTC)
    claims = {
        "iss": "atelier",
        "aud": AUDIENCE,
        "sub": "usr_x",
        "sid": "fam_x",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": "jti_x",
    }
    headers = {"kid": key.kid, "typ": ACCESS_TYP}
    secret, algorithm = key.secret, "HS256"
    for name, value in changes.items():
        if name == "secret":
            secret = value
        elif name == "alg":
            algorithm = value
        elif name in ("kid", "typ"):
            headers[name] = value
        elif value is None:
            del claims[name]
        else:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)


@pytest.mark.filterwarnings("ignore:The HMAC key is")
@pytest.mark.parametrize(
    "forgery",
    [
        {"secret": b"another key of the same length as the real one!"},
        {
            "exp": datetime(2020, 1, 1, tzinfo=UTC),
            "iat": datetime(2019, 1, 1, tzinfo=UTC),
            "nbf": datetime(2019, 1, 1, tzinfo=UTC),
        },
        {"aud": "someone-else"},
        {"iss": "evil"},
        {"typ": "JWT"},
        {"kid": "unknown"},
        {"alg": "HS512"},
        {"sid": None},
        {"sid": "fam_another_sign_in"},
    ],
)
async def test_forged_or_stale_access_tokens_are_refused(app, client, alice, forgery, db_session):
    changes = {"sub": alice.user.id, "sid": await sign_in_id(db_session, alice.user.id), **forgery}
    token = _forge(app, **changes)
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_alg_none_is_refused(client, alice):
    header_claims = jwt.encode({"sub": alice.user.id}, key=None, algorithm="none")
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {header_claims}"})
    assert response.status_code == 401


async def test_a_well_formed_token_is_accepted(app, client, alice, db_session):
    token = _forge(app, sub=alice.user.id, sid=await sign_in_id(db_session, alice.user.id))
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_no_credentials_is_401(client):
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
