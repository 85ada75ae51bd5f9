"""An access token dies with its sign-in: logging out, or a refresh-token reuse that ends the
sign-in, refuses its access tokens at once instead of when they expire (15 minutes)."""

from sqlalchemy import event

from atelier.core.clock import SystemClock
from atelier.identity import principals
from atelier.identity.deps import TOKEN_URL
from tests.identity.factories import PASSWORD, make_user, personal_org_id

ME = "/api/v1/me"
REFRESH = "/api/v1/auth/refresh"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(client, user) -> dict:
    response = await client.post(TOKEN_URL, data={"username": user.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()


async def test_logout_ends_the_access_token_too(client, db_session):
    user = await make_user(db_session)
    laptop, phone = await sign_in(client, user), await sign_in(client, user)
    assert (await client.get(ME, headers=bearer(laptop["access_token"]))).status_code == 200

    out = await client.post("/api/v1/auth/logout", json={"refresh_token": laptop["refresh_token"]})
    assert out.status_code == 204

    refused = await client.get(ME, headers=bearer(laptop["access_token"]))
    assert refused.status_code == 401
    assert "ended" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    # Another sign-in of the same person goes on.
    assert (await client.get(ME, headers=bearer(phone["access_token"]))).status_code == 200


async def test_a_refresh_reuse_ends_every_access_token_of_that_sign_in(client, db_session):
    user = await make_user(db_session)
    stolen = await sign_in(client, user)
    rotated = (await client.post(REFRESH, json={"refresh_token": stolen["refresh_token"]})).json()
    assert (await client.get(ME, headers=bearer(rotated["access_token"]))).status_code == 200

    reuse = await client.post(REFRESH, json={"refresh_token": stolen["refresh_token"]})
    assert reuse.status_code == 401

    for pair in (stolen, rotated):
        assert (await client.get(ME, headers=bearer(pair["access_token"]))).status_code == 401


async def test_the_check_costs_no_extra_round_trip(
    app, client, db_session, db_connection, db_sessionmaker
):
    """Resolving a user's token in an organization reads the account, the sign-in's state and
    the role in one statement (before the sign-in was checked: two, account and role)."""
    user = await make_user(db_session)
    org_id = await personal_org_id(db_session, user)
    token = (await sign_in(client, user))["access_token"]
    selects: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(db_connection.sync_connection, "before_cursor_execute", count)
    try:
        async with db_sessionmaker() as request_session:  # as a request's: nothing cached
            principal = await principals.resolve(
                request_session, token, org_id=org_id, config=app.state.tokens, clock=SystemClock()
            )
    finally:
        event.remove(db_connection.sync_connection, "before_cursor_execute", count)
    assert principal.user_id == user.id
    assert len(selects) == 1, selects
