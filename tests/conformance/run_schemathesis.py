"""Schemathesis against a live Atelier: does every operation answer what the OpenAPI document
says it answers? No server error, no status, content type or body the document does not declare.

    .venv/bin/python tests/conformance/run_schemathesis.py [--max-examples N] [st run options]

Starts `atelier up` on a free port with a SQLite database in a temporary folder (inline jobs),
signs up a user, creates an API key with every scope in the user's own organization and a few
things to find (a dataset, its job, an invitation), and runs `st run` with that key on the
API's operations, path parameters taking those identifiers most of the time. Exits with
schemathesis' status, so `.ci/run` fails on any finding; on failure the server's unhandled
errors are printed too.

The run's own account is kept out of reach: the operations that would revoke its key, take its
role or membership away, or delete its dataset are excluded (their own tests cover them). The
plan is `enterprise` and the per-address limits are high, so the run tests answers, not 429s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# Operations that would end the run's own access, or delete the dataset it explores.
EXCLUDED = (
    "DELETE /api/v1/api-keys/{key_id}",
    "DELETE /api/v1/datasets/{dataset_id}",
    "DELETE /api/v1/orgs/{org_id}/members/{user_id}",
    "PATCH /api/v1/orgs/{org_id}/members/{user_id}",
)
# How often a path parameter takes an identifier that exists rather than a generated one.
KNOWN_IDS_PROBABILITY = 0.7
PASSWORD = "conformance-run-passw0rd"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=None)
    args, st_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="atelier-schemathesis-") as folder:
        tmp = Path(folder)
        server, url = _start_server(tmp)
        try:
            key, known = _sign_up(url)
            config = _config(tmp, known)
            code = _run_schemathesis(url, key, config, args.max_examples, args.seed, st_args)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if code != 0:
            _print_server_errors(tmp / "server.log")
        return code


def _start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        ATELIER_DATA_DIR=str(tmp / "var"),
        ATELIER_DATABASE__URL=f"sqlite+aiosqlite:///{tmp / 'atelier.db'}",
        ATELIER_STORAGE__ROOT=str(tmp / "blobs"),
        ATELIER_JOBS__EXECUTOR="inline",
        ATELIER_AUTH__DEFAULT_PLAN="enterprise",
        ATELIER_AUTH__ATTEMPTS_PER_IP="100000/minute",
        ATELIER_AUTH__FAILURES_BEFORE_LOCKOUT="100000/minute",
        ATELIER_HTTP__ANONYMOUS_REQUESTS_PER_IP="100000/minute",
        ATELIER_LOGGING__FORMAT="json",
    )
    with (tmp / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "atelier", "up", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"atelier up exited with {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    sys.exit("atelier up did not answer within 60 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sign_up(url: str) -> tuple[str, dict[str, list[str | int]]]:
    """Sign up, create a key with every scope in the personal organization, and a few things
    to find: a dataset (and its profiling job), an invitation. Returns the key and, by path
    parameter, the identifiers that exist."""
    email = "conformance@example.com"
    with httpx.Client(base_url=url + "/api/v1", timeout=60) as http:
        account = {"email": email, "password": PASSWORD, "display_name": "Conformance"}
        http.post("/auth/register", json=account).raise_for_status()
        token = http.post("/auth/token", data={"username": email, "password": PASSWORD})
        token.raise_for_status()
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        body = {"name": "schemathesis", "scopes": ["read", "write", "admin"]}
        key = _json(http.post("/api-keys", json=body))["key"]
        org_id = _json(http.get("/me"))["org_id"]
        table = b"city,rooms,price\nLyon,3,250000\nNantes,2,180000\nLille,4,\n"
        files = {"file": ("homes.csv", table, "text/csv")}
        uploaded = _json(http.post("/datasets", files=files, data={"name": "homes"}))
        jobs = _json(http.get("/jobs"))["items"]
        invited = {"email": "invitee@example.com", "role": "member"}
        invitation = _json(http.post(f"/orgs/{org_id}/invitations", json=invited))
    return key, {
        "org_id": [org_id],
        "dataset_id": [uploaded["dataset"]["id"]],
        "number": [1],
        "job_id": [job["id"] for job in jobs],
        "invitation_id": [invitation["id"]],
    }


def _json(response: httpx.Response) -> dict:
    response.raise_for_status()
    return response.json()


def _config(folder: Path, known: dict[str, list[str | int]]) -> Path:
    """A schemathesis.toml that uses the identifiers that exist for most path parameters
    (the rest are generated, so unknown ones are tried too)."""
    lines = []
    for name, values in known.items():
        if values:
            lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for name, values in known.items():
        if values:
            binding = f'{{ dictionary = "{name}", probability = {KNOWN_IDS_PROBABILITY} }}'
            lines.append(f'"path.{name}" = {binding}')
    path = folder / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_schemathesis(
    url: str, key: str, config: Path, max_examples: int, seed: int | None, extra: list[str]
) -> int:
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--header",
        f"Authorization: Bearer {key}",
        "--request-timeout",
        "30",
        # One worker: hypothesis reads lambdas' source with `ast`, and on CPython 3.11.7 two
        # threads doing so can fail with "AST constructor recursion depth mismatch" (gh-106905).
        "--workers",
        "1",
        *(option for name in EXCLUDED for option in ("--exclude-name", name)),
        *(["--seed", str(seed)] if seed is not None else []),
        *extra,
    ]
    print("+ st", " ".join(command[1:]).replace(key, "<key>"), flush=True)
    return subprocess.run(command, check=False).returncode


def _print_server_errors(log: Path) -> None:
    """What the server logged as unhandled, in short: the request and the exception."""
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") != "unhandled_error":
            continue
        # The traceback is text; its last line names the exception.
        lines = str(event.get("exception") or "").strip().splitlines() or ["?"]
        print(
            f"server error: {event.get('method')} {event.get('path')}: {lines[-1][:300]}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
