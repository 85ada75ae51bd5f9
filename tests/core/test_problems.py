"""Every error leaves as an RFC 9457 problem document."""

import pytest
import structlog
from fastapi import APIRouter
from pydantic import BaseModel, Field

from atelier.core import errors

router = APIRouter(prefix="/api/v1/test")


class Widget(BaseModel):
    name: str = Field(min_length=2)
    size: int


@router.get("/raise/{name}")
async def raise_error(name: str) -> None:
    cls = getattr(errors, name)
    if cls is errors.TooManyRequests:
        raise cls("Slow down", retry_after=7)
    raise cls(f"{name} happened", meter="predictions")


@router.post("/widgets", status_code=201)
async def create_widget(widget: Widget) -> Widget:
    return widget


@router.get("/crash")
async def crash() -> None:
    raise RuntimeError("password=hunter2 at /srv/secret/path.py")


@pytest.fixture
def app(app):
    app.include_router(router)
    return app


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"/problems/{slug}"
    assert body["title"]
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("name", "status", "slug"),
    [
        ("BadRequest", 400, "bad-request"),
        ("Unauthorized", 401, "unauthorized"),
        ("QuotaExceeded", 402, "quota-exceeded"),
        ("Forbidden", 403, "forbidden"),
        ("NotFound", 404, "not-found"),
        ("Conflict", 409, "conflict"),
        ("PayloadTooLarge", 413, "payload-too-large"),
        ("UnsupportedMediaType", 415, "unsupported-media-type"),
        ("InvalidInput", 422, "validation-error"),
        ("ServiceUnavailable", 503, "service-unavailable"),
    ],
)
async def test_domain_errors_become_problems(client, name, status, slug):
    response = await client.get(f"/api/v1/test/raise/{name}")
    body = assert_problem(response, status, slug)
    assert body["detail"] == f"{name} happened"
    assert body["instance"] == f"/api/v1/test/raise/{name}"
    assert body["meter"] == "predictions"  # extra members travel with the problem


async def test_too_many_requests_says_when_to_retry(client):
    response = await client.get("/api/v1/test/raise/TooManyRequests")
    assert_problem(response, 429, "too-many-requests")
    assert response.headers["retry-after"] == "7"


async def test_unknown_route_is_a_404_problem(client):
    body = assert_problem(await client.get("/api/v1/nothing-here"), 404, "not-found")
    assert body["detail"] == "No resource at /api/v1/nothing-here"


async def test_wrong_method_is_a_405_problem(client):
    response = await client.delete("/api/v1/test/widgets")
    body = assert_problem(response, 405, "method-not-allowed")
    assert "DELETE" in body["detail"]
    assert response.headers["allow"] == "POST"


async def test_validation_errors_list_each_field(client):
    response = await client.post("/api/v1/test/widgets", json={"name": "x", "size": "big"})
    body = assert_problem(response, 422, "validation-error")
    pointers = {e["pointer"]: e["detail"] for e in body["errors"]}
    assert set(pointers) == {"/body/name", "/body/size"}
    assert "at least 2" in pointers["/body/name"]
    assert "integer" in pointers["/body/size"]
    assert body["detail"] == "2 fields failed validation"


async def test_malformed_json_is_a_422_problem(client):
    response = await client.post(
        "/api/v1/test/widgets", content=b"{not json", headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["pointer"].startswith("/body")


async def test_a_crash_is_a_bare_500_and_the_log_has_the_details(client):
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        response = await client.get("/api/v1/test/crash", headers={"x-request-id": "req-crash-42"})
    body = assert_problem(response, 500, "internal-error")
    assert body["request_id"] == "req-crash-42"
    assert response.headers["x-request-id"] == "req-crash-42"
    text = response.text
    assert "hunter2" not in text
    assert "RuntimeError" not in text
    assert "Traceback" not in text
    assert "/srv/secret" not in text
    crash = next(e for e in logs if e["event"] == "unhandled_error")
    assert crash["log_level"] == "error"
    assert crash["exc_info"] is True
    assert crash["request_id"] == "req-crash-42"
    request_log = next(e for e in logs if e["event"] == "request")
    assert request_log["status"] == 500
    assert request_log["route"] == "/api/v1/test/crash"
    assert request_log["request_id"] == "req-crash-42"
