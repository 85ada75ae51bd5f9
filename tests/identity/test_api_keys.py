"""API keys over HTTP: shown once, usable as a bearer, scoped, revocable."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from atelier.audit.models import AuditEvent
from atelier.identity.models import ApiKey
from tests.identity.factories import join, make_user, sign_in

KEYS = "/api/v1/api-keys"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_key_is_shown_once_stored_hashed_and_works_as_a_bearer(client, alice, db_session):
    created = await client.post(
        KEYS, json={"name": "CI", "scopes": ["read", "write"]}, headers=alice.headers
    )
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert key.startswith(f"atk_{body['prefix']}_")
    row = await db_session.get(ApiKey, body["id"])
    assert key not in (row.key_hash, row.prefix)
    listed = await client.get(KEYS, headers=alice.headers)
    assert key not in listed.text
    me = (await client.get("/api/v1/me", headers=bearer(key))).json()
    assert (me["kind"], me["org_id"], me["role"]) == ("api_key", alice.org_id, "member")
    assert me["scopes"] == ["read", "write"]
    await db_session.refresh(row)
    assert row.last_used_at is not None
    actions = [
        e.action
        for e in await db_session.scalars(select(AuditEvent).where(AuditEvent.target_id == row.id))
    ]
    assert actions == ["api_key.created"]


async def test_a_viewer_cannot_create_keys(client, alice, db_session):
    viewer = await make_user(db_session, display_name="Viewer")
    await join(db_session, viewer, alice.org_id, "viewer")
    signed = await sign_in(client, viewer, alice.org_id)
    response = await client.post(KEYS, json={"name": "mine"}, headers=signed.headers)
    assert response.status_code == 403
    assert response.json()["required_role"] == "member"


async def test_a_member_cannot_give_a_key_admin_scope(client, alice, db_session):
    member = await make_user(db_session, display_name="Member")
    await join(db_session, member, alice.org_id, "member")
    signed = await sign_in(client, member, alice.org_id)
    response = await client.post(
        KEYS, json={"name": "k", "scopes": ["admin"]}, headers=signed.headers
    )
    assert response.status_code == 403
    assert response.json()["allowed_scopes"] == ["read", "write"]


async def test_keys_cannot_make_keys(client, alice):
    key = (
        await client.post(KEYS, json={"name": "k", "scopes": ["admin"]}, headers=alice.headers)
    ).json()["key"]
    response = await client.post(KEYS, json={"name": "child"}, headers=bearer(key))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "k", "scopes": ["root"]}, "/body/scopes/0"),
        ({"name": "k", "scopes": []}, "/body/scopes"),
        ({"name": ""}, "/body/name"),
        ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "/body/expires_at"),
    ],
)
async def test_bad_key_requests_are_422(client, alice, body, pointer):
    response = await client.post(KEYS, json=body, headers=alice.headers)
    assert response.status_code == 422
    assert pointer in [e["pointer"] for e in response.json()["errors"]]


async def test_revoked_and_expired_keys_stop_working(client, alice, db_session):
    key = (await client.post(KEYS, json={"name": "k"}, headers=alice.headers)).json()
    assert (await client.delete(f"{KEYS}/{key['id']}", headers=alice.headers)).status_code == 204
    refused = await client.get("/api/v1/me", headers=bearer(key["key"]))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]

    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    expiring = (
        await client.post(KEYS, json={"name": "e", "expires_at": soon}, headers=alice.headers)
    ).json()
    row = await db_session.get(ApiKey, expiring["id"])
    row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    await db_session.commit()
    assert (await client.get("/api/v1/me", headers=bearer(expiring["key"]))).status_code == 401


@pytest.mark.parametrize(
    "key", ["atk_", "atk_deadbeef_", "atk_deadbeef_" + "x" * 43, "atk_../../etc_x"]
)
async def test_unknown_or_malformed_keys_are_401(client, key):
    assert (await client.get("/api/v1/me", headers=bearer(key))).status_code == 401


async def test_a_tampered_secret_with_a_real_prefix_is_refused(client, alice):
    key = (await client.post(KEYS, json={"name": "k"}, headers=alice.headers)).json()["key"]
    tampered = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert (await client.get("/api/v1/me", headers=bearer(tampered))).status_code == 401


async def test_a_key_cannot_reach_another_organization(client, alice, mallory):
    key = (await client.post(KEYS, json={"name": "k"}, headers=alice.headers)).json()["key"]
    response = await client.get(f"/api/v1/orgs/{mallory.org_id}", headers=bearer(key))
    assert response.status_code == 404
