"""Helpers for jobs tests against live processes."""

import json
import time
import uuid
from pathlib import Path

import httpx

from tests.identity.factories import PASSWORD

REPO = Path(__file__).resolve().parents[2]
# Every live process imports the test kinds and reports quickly.
FAST_JOBS = {
    "PYTHONPATH": str(REPO),
    "ATELIER_JOBS__MODULES": "tests.jobs.kinds",
    "ATELIER_JOBS__HEARTBEAT_SECONDS": "0.3",
    "ATELIER_JOBS__STALE_AFTER_SECONDS": "3",
    "ATELIER_JOBS__SWEEP_SECONDS": "0.5",
    "ATELIER_JOBS__TIME_LIMIT_GRACE_SECONDS": "0.5",
    "ATELIER_JOBS__EVENT_POLL_SECONDS": "0.1",
}


def sign_up(url: str) -> dict[str, str]:
    """A new user of a live server (with a personal organization): their request headers."""
    email = f"live-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=url, timeout=10) as http:
        created = http.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "Live"},
        )
        assert created.status_code == 201, created.text
        token = http.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
        assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def submit(url: str, headers: dict[str, str], kind: str, payload: dict | None = None) -> dict:
    response = httpx.post(
        url + "/api/v1/jobs",
        json={"kind": kind, "payload": payload or {}},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()


def get(url: str, headers: dict[str, str], job_id: str) -> dict:
    response = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(url: str, headers: dict[str, str], job_id: str, *statuses: str, within=30.0) -> dict:
    deadline = time.monotonic() + within
    job = get(url, headers, job_id)
    pause = 0.1
    while job["status"] not in statuses:
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job['status']} after {within} s: {json.dumps(job)}")
        time.sleep(pause)
        # Slower as it goes: a long job must not run into the plan's API rate limit.
        pause = min(pause * 1.5, 0.75)
        job = get(url, headers, job_id)
    return job


def wait_for_line(path: Path, prefix: str, within: float = 20.0) -> list[str]:
    """The ledger line starting with `prefix`, split, once a run wrote it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(prefix):
                    return line.split()
        time.sleep(0.05)
    raise AssertionError(f"no {prefix!r} line in {path} after {within} s")
