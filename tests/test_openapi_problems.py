"""The OpenAPI document declares the problem responses each operation answers, as
`application/problem+json` documents of the `Problem` schema (issue 17: schemathesis found
115 undeclared statuses). The last test calls every operation with bad input and no or good
credentials, and checks that what comes back is declared."""

import re

import pytest

from atelier.app import SERVICE_PROBLEMS
from atelier.core.problems import MEDIA_TYPE

PROBLEM_CONTENT = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.fixture
def schema(app):
    return app.openapi()


def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def test_every_error_response_is_a_problem_document(schema):
    components = schema["components"]["schemas"]
    assert components["Problem"]["required"] == ["type", "title", "status", "detail"]
    assert "HTTPValidationError" not in components  # FastAPI's 422 body, never sent
    errors = 0
    for path, method, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                errors += 1
                assert response["content"] == PROBLEM_CONTENT, f"{method} {path} {status}"
                assert response["description"], f"{method} {path} {status}"
    assert errors > 300


def test_operations_declare_what_credentials_and_input_can_refuse(schema):
    for path, method, operation in _operations(schema):
        declared = {int(s) for s in operation["responses"]}
        parameters = operation.get("parameters", [])
        name = f"{method} {path}"
        if operation.get("security"):
            assert {401, 403, 404, 429} <= declared, name
        if path.startswith("/api/") and operation.get("x-atelier-action") == "public":
            assert 429 in declared, name  # per client address
        if any(p["in"] == "path" for p in parameters):
            assert 404 in declared, name
        if parameters or "requestBody" in operation:
            assert 422 in declared, name
        if "requestBody" in operation:
            assert {400, 413} <= declared, name  # not UTF-8; too large
        if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
            assert {402, 413, 415} <= declared, name
        assert declared >= SERVICE_PROBLEMS.get(name, set()), name


def test_every_service_problem_names_an_operation(schema):
    operations = {f"{method} {path}" for path, method, _ in _operations(schema)}
    assert set(SERVICE_PROBLEMS) <= operations


def _requests(path, method, operation):
    """Requests that should be refused: unknown ids, bad query values, a wrong body."""
    url = re.sub(r"\{[^}]+\}", "nope", path)
    bad_query = {p["name"]: "-1" for p in operation.get("parameters", []) if p["in"] == "query"}
    content = operation.get("requestBody", {}).get("content", {})
    yield {"method": method, "url": url}
    if bad_query:
        yield {"method": method, "url": url, "params": bad_query}
    if "application/json" in content:
        yield {"method": method, "url": url, "json": ["not", "an", "object"]}
        not_utf8 = {"content-type": "application/json"}
        yield {"method": method, "url": url, "content": b"\xff{", "headers": not_utf8}
    if content:
        yield {"method": method, "url": url, "content": b"\x00", "headers": {"content-type": "x/y"}}


async def test_what_every_operation_answers_to_bad_requests_is_declared(schema, client, alice):
    auth = {"Authorization": f"Bearer {alice.token}"}
    seen: set[int] = set()
    for path, method, operation in _operations(schema):
        if path in ("/metrics", "/readiness"):
            continue  # no input to get wrong
        declared = {int(s) for s in operation["responses"]}
        for request in _requests(path, method, operation):
            sent = {k: v for k, v in request.items() if k != "headers"}
            for credentials in ({}, auth):
                headers = {**request.get("headers", {}), **credentials}
                response = await client.request(**sent, headers=headers)
                status = response.status_code
                if status < 400:
                    continue
                seen.add(status)
                where = f"{method} {request['url']} -> {status}: {response.text[:200]}"
                assert status in declared, where
                assert response.headers["content-type"] == MEDIA_TYPE, where
                problem = response.json()
                assert problem["status"] == status, where
                assert {"type", "title", "detail"} <= set(problem), where
    assert {401, 404, 422} <= seen, seen


async def test_a_taken_dataset_name_is_a_declared_conflict(schema, client, alice):
    # Found by the schemathesis run (stateful phase): the second upload under a name is a 409.
    declared = {int(s) for s in schema["paths"]["/api/v1/datasets"]["post"]["responses"]}
    statuses = []
    for _ in range(2):
        files = {"file": ("homes.csv", b"city,rooms\nLyon,3\nNantes,2\n", "text/csv")}
        response = await client.post(
            "/api/v1/datasets", files=files, data={"name": "homes"}, headers=alice.headers
        )
        statuses.append(response.status_code)
    assert statuses == [201, 409]
    assert 409 in declared
