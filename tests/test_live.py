"""Atelier as a user starts it: real processes, real sockets."""

import re
import time

import httpx
import pytest

pytestmark = pytest.mark.live


def test_up_migrates_and_serves_everything(start_server, tmp_path, database_url):
    server = start_server("up", database=database_url)  # SQLite or PostgreSQL, as the suite
    assert (tmp_path / "blobs").is_dir()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/readiness").status_code == 200
        docs = http.get("/docs")
        assert docs.status_code == 200
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
        assert http.get("/openapi.json").json()["info"]["title"] == "Atelier"
        assert '<html lang="en">' in http.get("/").text
        metrics = http.get("/metrics").text
    assert 'atelier_http_requests_total{method="GET",route="/docs",status="200"} 1.0' in metrics
    assert '"event": "request"' in server.log()  # JSON access log lines


def _total(metrics: str, route: str) -> float:
    labels = f'method="GET",route="{re.escape(route)}",status="303"'
    pattern = rf"^atelier_http_requests_total\{{{labels}\}} (\S+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, metrics, re.MULTILINE))


def test_metrics_are_merged_across_worker_processes(start_server, tmp_path):
    server = start_server("api", "--workers", "2")
    requests = 40
    for _ in range(requests):
        # a new connection each time, so the kernel spreads them over both workers
        assert httpx.get(server.url + "/lang/en", timeout=10).status_code == 303
    deadline = time.monotonic() + 20
    while True:
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        pids = set(re.findall(r'^atelier_worker_resident_memory_bytes\{pid="(\d+)"', metrics, re.M))
        if len(pids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Whichever worker answers the scrape, it reports every worker's requests.
    for _ in range(4):
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert _total(metrics, "/lang/{code}") == requests
    assert len(pids) == 2, metrics
    assert (tmp_path / "var" / "metrics").is_dir()
