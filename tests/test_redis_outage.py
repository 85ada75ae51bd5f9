"""Fault test: the rate limiter's Redis goes down and comes back (issue 18, item 3).

A private `redis-server` on a free loopback port, started and stopped by the test. While it is
down, sign-in still works and plan limits still apply, counted in this process's memory, with
one warning and a metric; once it answers again the limiter counts in Redis again.
"""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from atelier.identity.deps import TOKEN_URL
from atelier.plans.models import Plan
from tests.conftest import free_port
from tests.identity.factories import PASSWORD, make_user
from tests.redis_fixtures import PrivateRedis, needs_redis_server

pytestmark = needs_redis_server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(make_settings, private_redis):
    return make_settings(redis_url=private_redis.url)


def _sample(metrics_text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics_text, re.MULTILINE)
    assert match, f"{name} is not in /metrics"
    return float(match.group(1))


async def _sign_in(client, email: str, password: str = PASSWORD):
    return await client.post(TOKEN_URL, data={"username": email, "password": password})


async def test_sign_in_and_plan_limits_survive_a_redis_outage(client, db_session, private_redis):
    plan = await db_session.get(Plan, "trial")
    plan.api_requests_per_minute = 3
    await db_session.commit()
    user = await make_user(db_session)
    shared = private_redis.client()

    # Redis up: the limiter counts there.
    assert (await _sign_in(client, user.email)).status_code == 200
    assert shared.keys("*"), "the per-address sign-in limit left no key in Redis"
    ready = (await client.get("/readiness")).json()["checks"]["rate_limits"]
    assert ready == {**ready, "status": "ok", "detail": f"redis {private_redis.url}"}
    fallbacks_before = _sample(
        (await client.get("/metrics")).text, "atelier_ratelimit_fallback_total"
    )

    # Redis down: sign-in still works, answered quickly, with one warning for the switch.
    private_redis.stop()
    with structlog.testing.capture_logs() as logs:
        begin = time.monotonic()
        signed_in = await _sign_in(client, user.email)
        assert signed_in.status_code == 200, signed_in.text
        assert time.monotonic() - begin < 5
        token = signed_in.json()["access_token"]
        assert (await _sign_in(client, user.email)).status_code == 200
        # The plan's 3 requests a minute still apply, counted in memory.
        me = {"Authorization": f"Bearer {token}"}
        for _ in range(3):
            assert (await client.get("/api/v1/me", headers=me)).status_code == 200
        refused = await client.get("/api/v1/me", headers=me)
        assert refused.status_code == 429, refused.text
        assert refused.json()["limit"] == "3 per 1 minute"
    switches = [e for e in logs if e["event"] == "ratelimit_store_unreachable"]
    assert len(switches) == 1, logs
    assert switches[0]["log_level"] == "warning"
    assert switches[0]["store"] == private_redis.url
    metrics_text = (await client.get("/metrics")).text
    assert _sample(metrics_text, "atelier_ratelimit_fallback_total") >= fallbacks_before + 6
    assert _sample(metrics_text, "atelier_ratelimit_store_up") == 0
    ready = await client.get("/readiness")
    assert ready.status_code == 200  # the fallback keeps the service up: not a readiness failure
    detail = ready.json()["checks"]["rate_limits"]["detail"]
    assert detail.startswith(f"memory (fallback: {private_redis.url} unreachable since ")

    # Redis back on the same port (empty): the next probe finds it and counts go there again.
    private_redis.start()
    assert not shared.keys("*")
    with structlog.testing.capture_logs() as logs:
        ready = (await client.get("/readiness")).json()["checks"]["rate_limits"]
    assert ready["detail"] == f"redis {private_redis.url}"
    assert [e["event"] for e in logs if e["event"].startswith("ratelimit_")] == [
        "ratelimit_store_recovered"
    ]
    assert (await _sign_in(client, user.email)).status_code == 200
    assert shared.keys("*"), "the limiter did not count in Redis once it was back"
    assert _sample((await client.get("/metrics")).text, "atelier_ratelimit_store_up") == 1
