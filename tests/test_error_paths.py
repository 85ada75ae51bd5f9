"""What an error costs: a 422 where a bad parameter used to reach the database, logs that
never show a credential, and an unhandled error that never holds up other requests."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from sqlalchemy import text

from atelier.core import logging as core_logging
from atelier.core.deps import DbSession
from atelier.core.pagination import MAX_OFFSET
from atelier.identity.deps import TOKEN_URL, CurrentPrincipal
from tests import failing_app
from tests.conftest import LiveServer
from tests.failing_app import FAIL_PATH, READ_PATH
from tests.identity.factories import PASSWORD
from tests.logging_fixtures import fixture_restore_logging  # noqa: F401 - a fixture

HUGE = 100_000_000_000_000_000_000
REPO = Path(__file__).resolve().parent.parent

# ---- parameters are bounded ----------------------------------------------------------------


def _routes(routes) -> list[APIRoute]:
    found = []
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI 0.165 keeps routers whole
        if included is not None:
            found += _routes(included.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def _params(dependant):
    yield from dependant.query_params
    yield from dependant.path_params
    yield from dependant.header_params
    for sub in dependant.dependencies:
        yield from _params(sub)


def test_every_integer_parameter_has_an_upper_bound(app: FastAPI):
    """An unbounded integer reaches the database driver, which fails on one past 64 bits."""
    routes = _routes(app.routes)
    assert len(routes) > 50
    unbounded = [
        f"{route.path} {param.name}"
        for route in routes
        for param in _params(route.dependant)
        if param.field_info.annotation in (int, int | None)
        and not any(
            hasattr(rule, "le") or hasattr(rule, "lt") for rule in param.field_info.metadata
        )
    ]
    assert unbounded == []


LISTS = [
    "/api/v1/datasets",
    "/api/v1/models",
    "/api/v1/automl/runs",
    "/api/v1/jobs",
    "/api/v1/audit-events",
    "/api/v1/models/some-model/versions",
]


@pytest.mark.parametrize("path", LISTS)
async def test_a_huge_offset_is_a_validation_problem(client, alice, path):
    response = await client.get(path, params={"offset": HUGE}, headers=alice.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["pointer"] for e in response.json()["errors"]] == ["/query/offset"]


async def test_the_largest_offset_is_an_empty_page(client, alice):
    response = await client.get(
        "/api/v1/datasets", params={"offset": MAX_OFFSET}, headers=alice.headers
    )
    assert response.status_code == 200
    assert response.json()["items"] == []


# ---- no credential in any log line ---------------------------------------------------------

router = APIRouter()


@router.get("/api/v1/test/fail-with-credentials")
async def fail_with_credentials(
    request: Request, principal: CurrentPrincipal, session: DbSession
) -> None:
    # A database error whose parameters carry the caller's credential, raised under frames
    # whose locals hold the request, its headers and the principal.
    await session.execute(
        text("SELECT * FROM no_such_table WHERE credential = :credential"),
        {"credential": request.headers["authorization"]},
    )


@router.get("/api/v1/test/crash-with-credentials")
async def crash_with_credentials(request: Request) -> None:
    raise RuntimeError(f"upstream refused {dict(request.headers)}")


@pytest.fixture
def app(app):
    app.include_router(router)
    return app


def _altered(secret: str) -> str:
    """The same credential with its last characters changed: refused, but mostly the real one."""
    return secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")


def _fragments(text: str, size: int = 12) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_the_logs_of_error_paths_show_no_credential(
    client, alice, capsys, restore_logging, fmt
):
    signed_in = await client.post(
        TOKEN_URL, data={"username": alice.user.email, "password": PASSWORD}
    )
    refresh_token = signed_in.json()["refresh_token"]
    created = await client.post(
        "/api/v1/api-keys", json={"name": "reader", "scopes": ["read"]}, headers=alice.headers
    )
    api_key = created.json()["key"]
    credentials = [alice.token, api_key, refresh_token, PASSWORD]
    core_logging.configure(level="DEBUG", fmt=fmt)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "X-Atelier-Org": alice.org_id}

    crash = "/api/v1/test/crash-with-credentials"
    fail = "/api/v1/test/fail-with-credentials"
    calls = [  # (method, path, request options, expected status)
        ("GET", "/api/v1/me", {"headers": bearer(_altered(alice.token))}, 401),
        ("GET", "/api/v1/me", {"headers": bearer(_altered(api_key))}, 401),
        (
            "POST",
            TOKEN_URL,
            {"data": {"username": alice.user.email, "password": _altered(PASSWORD)}},
            401,
        ),
        (
            "POST",
            TOKEN_URL,
            {"data": {"username": "nobody@example.com", "password": PASSWORD}},
            401,
        ),
        ("POST", "/api/v1/auth/refresh", {"json": {"refresh_token": _altered(refresh_token)}}, 401),
        ("GET", "/api/v1/datasets", {"params": {"offset": HUGE}, "headers": bearer(api_key)}, 422),
        (
            "GET",
            crash,
            {"headers": {**bearer(alice.token), "Cookie": f"atelier_session={refresh_token}"}},
            500,
        ),
        ("GET", fail, {"headers": bearer(api_key)}, 500),
        ("GET", fail, {"headers": bearer(alice.token)}, 500),
    ]
    for method, path, options, status in calls:
        response = await client.request(method, path, **options)
        assert response.status_code == status, (method, path, response.text)
    logged = capsys.readouterr().err
    assert logged.count("unhandled_error") == 3
    assert "no_such_table" in logged  # the errors are logged, only the credentials are not
    for credential in credentials:
        for shown in (credential, _altered(credential)):
            leaked = _fragments(shown) & _fragments(logged)
            assert not leaked, (credential[:6], leaked)


# ---- an unhandled error holds up nothing ---------------------------------------------------


@pytest.fixture
def failing_server(tmp_path: Path) -> Iterator[LiveServer]:
    """`tests.failing_app:build` under uvicorn, on a SQLite file of its own, with the embedded
    profile's default log format (console)."""
    with failing_app.serve(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'live.db'}") as server:
        yield server


@pytest.mark.live
@pytest.mark.backend_independent  # a SQLite file of its own
def test_unhandled_errors_do_not_hold_up_health(failing_server: LiveServer):
    """Ten concurrent reads fail, three times over, while /health is polled.

    The server is warmed up first by ten concurrent reads that succeed: a cold server's first
    burst of reads (ten new database connections, first compilations) holds the loop for over
    100 ms whether they fail or not, and that is not what this test is about. The clients are
    made beforehand too: making one (its TLS context) holds this process's GIL for tens of ms,
    which the poller would count as the server's delay."""
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    reads = httpx.Client(base_url=failing_server.url, timeout=60, limits=limits)
    probe = httpx.Client(base_url=failing_server.url, timeout=30)
    with reads, probe, ThreadPoolExecutor(10) as pool:
        warm = list(pool.map(lambda _: reads.get(READ_PATH), range(10)))
        assert {r.status_code for r in warm} == {200}
        done = threading.Event()
        started = time.perf_counter()
        health: list[tuple[float, float, int]] = []  # (when, latency, status)

        def poll_health() -> None:
            while not done.is_set():
                begin = time.perf_counter()
                status = probe.get("/health").status_code
                health.append((begin - started, time.perf_counter() - begin, status))
                time.sleep(0.02)

        def fail(n: int) -> httpx.Response:
            return reads.get(FAIL_PATH, headers={"X-Request-ID": f"live-error-{n:04d}"})

        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            time.sleep(0.2)
            responses: list[httpx.Response] = []
            for first in (0, 10, 20):  # ten reads at once, three times
                responses += pool.map(fail, range(first, first + 10))
            time.sleep(0.2)
        finally:
            done.set()
            poller.join()
    assert [r.status_code for r in responses] == [500] * 30
    assert {r.headers["content-type"] for r in responses} == {"application/problem+json"}
    assert len(health) >= 10
    assert {status for _, _, status in health} == {200}
    slow = [(round(when, 3), round(latency, 3)) for when, latency, _ in health if latency >= 0.1]
    assert slow == [], health
    log = failing_server.log()
    for n in range(30):
        assert f"request_id=live-error-{n:04d}" in log
    assert log.count("unhandled_error") == 30
    assert log.count("OperationalError") >= 30
    assert len(log) < 30 * 2 * core_logging.MAX_EXCEPTION_CHARS
