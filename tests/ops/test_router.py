import re

import httpx
import pytest

from atelier import __version__
from atelier.app import create_app


async def test_health_answers_without_dependencies(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_checks_the_database(client, engine):
    response = await client.get("/readiness")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert engine.dialect.name in body["checks"]["database"]["detail"]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_readiness_is_503_when_the_database_is_unreachable(make_settings, tmp_path, kind):
    url = {
        "postgresql": "postgresql+asyncpg://postgres@127.0.0.1:1/nothing",
        "sqlite": f"sqlite+aiosqlite:///{tmp_path}",  # a directory cannot be opened as a database
    }[kind]
    app = create_app(make_settings(database={"url": url, "connect_timeout": 2}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/readiness")
        health = await client.get("/health")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/not-ready"
    assert body["checks"]["database"]["status"] == "fail"
    assert body["detail"].startswith("database: unreachable")
    assert "127.0.0.1" not in response.text  # internals stay in the log
    assert health.status_code == 200  # liveness does not depend on the database
    await app.state.engine.dispose()


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_metrics_count_requests_by_route_template(client):
    labels = {"method": "GET", "route": "/lang/{code}", "status": "303"}
    before = _sample((await client.get("/metrics")).text, "atelier_http_requests_total", **labels)
    await client.get("/lang/fr")
    await client.get("/lang/en?next=/docs")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _sample(text, "atelier_http_requests_total", **labels) == before + 2
    assert _sample(text, "atelier_http_request_duration_seconds_count", **labels) == before + 2
    assert "atelier_http_requests_in_progress" in text
    assert "process_resident_memory_bytes" in text


async def test_unmatched_paths_share_one_metric_label(client):
    await client.get("/random-1")
    await client.get("/random-2")
    text = (await client.get("/metrics")).text
    assert "/random-1" not in text
    assert (
        _sample(
            text, "atelier_http_requests_total", method="GET", route="<unmatched>", status="404"
        )
        >= 2
    )


async def test_unknown_methods_share_one_metric_label(client):
    await client.request("BREW", "/health")
    text = (await client.get("/metrics")).text
    assert "BREW" not in text
    assert (
        _sample(text, "atelier_http_requests_total", method="OTHER", route="/health", status="405")
        >= 1
    )


async def test_the_api_reports_its_version(client):
    response = await client.get("/api/v1/version")
    assert response.json() == {"version": __version__, "api": "v1"}
