"""The application as assembled by create_app."""

import re

import structlog

from atelier.core.routing import API_PREFIX
from atelier.web.rendering import STATIC_DIR


async def test_the_app_starts_and_answers_on_the_suites_database(client, engine):
    response = await client.get("/readiness")
    assert response.status_code == 200
    assert response.json()["checks"]["database"]["detail"] == f"reachable ({engine.dialect.name})"


async def test_every_route_is_logged_and_counted_under_its_full_template(app, client):
    """Guards the convention of core.routing: a route's label is its OpenAPI path."""
    paths = app.openapi()["paths"]
    assert f"{API_PREFIX}/version" in paths
    for template, operations in paths.items():
        method = next(iter(operations)).upper()
        url = re.sub(r"\{[^}]+\}", "x", template)
        with structlog.testing.capture_logs() as logs:
            await client.request(method, url)
        logged = [e["route"] for e in logs if e["event"] == "request"]
        assert logged == [template], f"{method} {url}"


async def test_the_web_routes_and_static_files_have_bounded_labels(client):
    with structlog.testing.capture_logs() as logs:
        await client.get("/lang/fr")
        await client.get("/static/css/atelier.css")
        await client.get("/static/no/such/file.css")
    assert [e["route"] for e in logs if e["event"] == "request"] == [
        "/lang/{code}",
        "/static/{path}",
        "/static/{path}",
    ]
    assert (STATIC_DIR / "css" / "atelier.css").exists()
