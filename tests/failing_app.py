"""Atelier with one more route, which fails the way a read fails when the database is in trouble.

Started by uvicorn in live tests (`tests.failing_app:build`) to measure what an unhandled error
costs every other request; production code has no such route.
"""

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from atelier.app import app_from_environment
from atelier.core.deps import DbSession

if TYPE_CHECKING:  # the server process imports this module: no pytest fixtures there
    from tests.conftest import LiveServer

FAIL_PATH = "/api/v1/test/fail"
READ_PATH = "/api/v1/test/read"

router = APIRouter()


@router.get(FAIL_PATH)
async def fail(session: DbSession) -> None:
    await session.execute(text("SELECT * FROM no_such_table"))


@router.get(READ_PATH)
async def read(session: DbSession) -> int:
    """The same read, succeeding: to warm the server up (connections, compiled statements)."""
    return (await session.execute(text("SELECT 1"))).scalar_one()


def build() -> FastAPI:
    """The app `atelier api` serves (settings from ATELIER_*), plus the failing route."""
    app = app_from_environment()
    app.include_router(router)
    return app


@contextmanager
def serve(tmp_path: Path, database_url: str) -> Iterator["LiveServer"]:
    """`build` under uvicorn as `atelier api` runs it, on `database_url`, with the default log
    format (console), until the block ends."""
    from tests.conftest import LiveServer, cli_env, free_port

    port = free_port()
    log_path = tmp_path / "server.log"
    repo = str(Path(__file__).resolve().parent.parent)
    env = cli_env(tmp_path, database_url, ATELIER_LOGGING__FORMAT="auto", PYTHONPATH=repo)
    command = (
        "import uvicorn; uvicorn.run('tests.failing_app:build', factory=True, host='127.0.0.1', "
        f"port={port}, log_config=None, access_log=False)"
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", command], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    server = LiveServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, server.log()
            assert time.monotonic() < deadline, server.log()
            try:
                if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
