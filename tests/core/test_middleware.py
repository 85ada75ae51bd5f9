import asyncio
import json

import httpx
import pytest
import structlog
from fastapi import APIRouter, Request
from polars.exceptions import PanicException

from atelier.core import logging as core_logging
from atelier.core.middleware import RequestContextMiddleware
from tests.logging_fixtures import fixture_restore_logging  # noqa: F401 - a fixture

router = APIRouter(prefix="/api/v1/test")


@router.post("/echo")
async def echo(request: Request) -> dict:
    body = await request.body()
    return {"received": len(body)}


@router.post("/json")
async def json_body(payload: dict) -> dict:
    return {"keys": len(payload)}


@router.get("/hello")
async def hello() -> dict:
    return {"hello": "world"}


@router.get("/files/{token}")
async def signed_file(token: str) -> dict:
    return {"length": len(token)}


@router.get("/panic")
async def panic() -> dict:
    # What polars raises when its Rust code panics: a BaseException, not an Exception.
    raise PanicException("called `Option::unwrap()` on a `None` value")


@pytest.fixture
def settings(make_settings):
    return make_settings(http={"max_body_bytes": 2048})


@pytest.fixture
def app(app):
    app.include_router(router)
    return app


# ---- request ids ----------------------------------------------------------------------------


async def test_a_valid_request_id_is_echoed(client):
    response = await client.get("/health", headers={"X-Request-ID": "abc-123.def_456"})
    assert response.headers["x-request-id"] == "abc-123.def_456"


@pytest.mark.parametrize("bad", ["short", "x" * 200, "has space inside", "new\\nline-injected"])
async def test_an_invalid_request_id_is_replaced(client, bad):
    response = await client.get("/health", headers={"X-Request-ID": bad})
    generated = response.headers["x-request-id"]
    assert generated != bad
    assert len(generated) == 32


async def test_each_request_without_an_id_gets_a_new_one(client):
    first = (await client.get("/health")).headers["x-request-id"]
    second = (await client.get("/health")).headers["x-request-id"]
    assert first != second


async def test_errors_carry_the_request_id_too(client):
    response = await client.get("/nowhere", headers={"X-Request-ID": "trace-me-please"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-me-please"


# ---- body limit -----------------------------------------------------------------------------


async def test_a_body_within_the_limit_is_read(client):
    response = await client.post("/api/v1/test/echo", content=b"x" * 2048)
    assert response.json() == {"received": 2048}


async def test_a_declared_oversize_body_is_refused_before_reading(client):
    response = await client.post("/api/v1/test/echo", content=b"x" * 5000)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["limit"] == 2048


async def test_a_streamed_oversize_body_is_refused_while_streaming(client):
    sent = []

    async def chunks():
        for _ in range(100):
            sent.append(1)
            yield b"y" * 512

    response = await client.post("/api/v1/test/echo", content=chunks())
    assert response.status_code == 413
    assert response.json()["type"] == "/problems/payload-too-large"
    # The app stopped reading past the limit: 2048 bytes is 4 chunks, the 5th overflowed.
    assert len(sent) < 100


async def test_an_oversize_json_body_is_413_not_a_parse_error(client):
    async def chunks():
        yield b'{"a": "'
        for _ in range(20):
            yield b"z" * 256
        yield b'"}'

    response = await client.post(
        "/api/v1/test/json", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


# ---- headers --------------------------------------------------------------------------------


async def test_security_headers_are_set(client):
    response = await client.get("/api/v1/test/hello")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "strict-transport-security" not in response.headers  # plain HTTP


async def test_hsts_is_sent_over_https(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/health")
    assert response.headers["strict-transport-security"].startswith("max-age=")


class TestCors:
    @pytest.fixture
    def settings(self, make_settings):
        return make_settings(http={"cors_origins": ["https://app.example"]})

    async def test_an_allowed_origin_gets_cors_headers(self, client):
        response = await client.get("/health", headers={"Origin": "https://app.example"})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert response.headers["access-control-allow-credentials"] == "true"

    async def test_another_origin_gets_none(self, client):
        response = await client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers

    async def test_preflight_from_an_allowed_origin(self, client):
        response = await client.options(
            "/api/v1/test/echo",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"


async def test_no_cors_headers_without_an_allowlist(client):
    response = await client.get("/health", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


class TestTrustedHosts:
    @pytest.fixture
    def settings(self, make_settings):
        return make_settings(http={"trusted_hosts": ["atelier.example", "*.atelier.example"]})

    @pytest.mark.parametrize(
        "host", ["atelier.example", "atelier.example:8000", "eu.atelier.example"]
    )
    async def test_listed_hosts_are_served(self, client, host):
        response = await client.get("/health", headers={"Host": host})
        assert response.status_code == 200

    @pytest.mark.parametrize("host", ["evil.example", "atelier.example.evil.example", ""])
    async def test_other_hosts_get_a_problem(self, client, host):
        response = await client.get("/health", headers={"Host": host})
        assert response.status_code == 400
        assert response.json()["type"] == "/problems/invalid-host"


async def test_a_path_carrying_a_token_is_logged_as_its_template(client):
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/api/v1/test/files/signed.payload.and-its-signature")
    assert response.status_code == 200
    [line] = [e for e in logs if e["event"] == "request"]
    assert line["path"] == line["route"] == "/api/v1/test/files/{token}"


# ---- unexpected errors ----------------------------------------------------------------------


async def test_a_native_panic_is_a_problem_document_and_is_logged(client, capsys, restore_logging):
    core_logging.configure(level="INFO", fmt="json")
    response = await client.get("/api/v1/test/panic", headers={"X-Request-ID": "panic-request-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == "panic-request-1"
    assert "unwrap" not in response.text
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    [crash] = [line for line in lines if line["event"] == "unhandled_error"]
    assert crash["request_id"] == "panic-request-1"
    assert "PanicException: called `Option::unwrap()`" in crash["exception"]
    assert len(crash["exception"]) <= core_logging.MAX_EXCEPTION_CHARS + 100


def _raising(exc: BaseException):
    async def app(scope, receive, send):
        raise exc

    return app


@pytest.mark.parametrize(
    "exc",
    [
        KeyboardInterrupt(),
        SystemExit(0),
        asyncio.CancelledError(),
        GeneratorExit(),
        BaseExceptionGroup("cancelled", [asyncio.CancelledError()]),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_shutdown_and_cancellation_pass_through(exc):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    middleware = RequestContextMiddleware(_raising(exc))
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    with structlog.testing.capture_logs() as logs, pytest.raises(type(exc)):
        await middleware(scope, receive, send)
    assert sent == []  # no 500 answered on the way out
    assert [e["event"] for e in logs] == ["request"]
