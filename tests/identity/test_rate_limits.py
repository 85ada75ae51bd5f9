"""Brute-force protection: per-IP limits on auth calls and per-account lockout with backoff,
in memory and in the real Redis (`ATELIER_TEST_REDIS_URL`, as `.ci/run` sets)."""

import os
import uuid

import pytest
from sqlalchemy import select

from atelier.audit.models import AuditEvent
from atelier.core.ratelimit import RateLimiter
from atelier.identity.deps import TOKEN_URL
from tests.identity.factories import PASSWORD, make_user


@pytest.fixture(params=["memory", "redis"])
def redis_url(request) -> str | None:
    if request.param == "memory":
        return None
    url = os.environ.get("ATELIER_TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must run the rate limiter on Redis: set ATELIER_TEST_REDIS_URL")
        pytest.skip("ATELIER_TEST_REDIS_URL is not set")
    return url


@pytest.fixture
def settings(make_settings, redis_url):
    return make_settings(
        redis_url=redis_url,
        auth={"failures_before_lockout": "3/minute", "attempts_per_ip": "8/minute"},
    )


@pytest.fixture
def app(app, settings):
    # A namespace of its own, so runs sharing one Redis never count each other's calls.
    app.state.limiter = RateLimiter(settings.redis_url, namespace=f"test-{uuid.uuid4().hex}")
    return app


async def sign_in(client, email: str, password: str):
    return await client.post(TOKEN_URL, data={"username": email, "password": password})


async def test_repeated_failures_lock_the_account_even_for_the_right_password(client, db_session):
    victim = await make_user(db_session)
    bystander = await make_user(db_session)
    for _ in range(3):
        assert (await sign_in(client, victim.email, "wrong password!")).status_code == 401
    locked = await sign_in(client, victim.email, PASSWORD)
    assert locked.status_code == 429
    assert locked.headers["content-type"] == "application/problem+json"
    assert 0 < int(locked.headers["retry-after"]) <= 60
    assert locked.headers["ratelimit-limit"] == "3"
    assert locked.headers["ratelimit-remaining"] == "0"
    assert locked.json()["type"] == "/problems/too-many-requests"
    # Another account is not affected, and neither is the victim's email in another case.
    assert (await sign_in(client, bystander.email, PASSWORD)).status_code == 200
    assert (await sign_in(client, victim.email.upper(), PASSWORD)).status_code == 429
    reasons = [
        e.details.get("reason")
        for e in await db_session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "auth.sign_in", AuditEvent.outcome == "failure"
            )
        )
        if e.details.get("email") == victim.email
    ]
    assert reasons.count("bad_credentials") == 3
    assert reasons.count("locked") == 2


async def test_successful_sign_ins_do_not_count_towards_the_lockout(client, db_session):
    user = await make_user(db_session)
    for _ in range(4):
        assert (await sign_in(client, user.email, PASSWORD)).status_code == 200


async def test_auth_calls_are_limited_per_address(client):
    for _ in range(8):
        response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "rt_nope"})
        assert response.status_code == 401
    refused = await client.post("/api/v1/auth/refresh", json={"refresh_token": "rt_nope"})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1


async def test_api_requests_are_limited_per_key_and_per_user_by_the_plan(client, db_session, alice):
    from atelier.plans.models import Plan

    plan = await db_session.get(Plan, "trial")
    plan.api_requests_per_minute = 3
    await db_session.commit()
    keys = []
    for name in ("one", "two"):
        created = await client.post("/api/v1/api-keys", json={"name": name}, headers=alice.headers)
        assert created.status_code == 201
        keys.append({"Authorization": f"Bearer {created.json()['key']}"})
    # Alice used 2 of her 3 creating the keys; the keys have their own counts.
    assert (await client.get("/api/v1/me", headers=alice.headers)).status_code == 200
    refused = await client.get("/api/v1/me", headers=alice.headers)
    assert refused.status_code == 429
    assert refused.json()["limit"] == "3 per 1 minute"
    for _ in range(3):
        assert (await client.get("/api/v1/me", headers=keys[0])).status_code == 200
    assert (await client.get("/api/v1/me", headers=keys[0])).status_code == 429
    assert (await client.get("/api/v1/me", headers=keys[1])).status_code == 200


class TestAnonymousCalls:
    @pytest.fixture
    def settings(self, make_settings, redis_url):
        return make_settings(redis_url=redis_url, http={"anonymous_requests_per_ip": "3/minute"})

    async def test_public_api_operations_are_limited_per_address(self, client):
        for _ in range(3):
            assert (await client.get("/api/v1/version")).status_code == 200
        refused = await client.get("/api/v1/version")
        assert refused.status_code == 429
        assert refused.headers["ratelimit-limit"] == "3"
        assert (await client.get("/health")).status_code == 200  # probes are never limited
