"""Shared fixtures. The suite runs on SQLite by default and on PostgreSQL when
`ATELIER_TEST_DATABASE_URL` names an (empty) database, as `.ci/run` does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from atelier.app import create_app
from atelier.core.db import create_engine
from atelier.ops import migrations
from atelier.settings import DatabaseSettings, Settings
from tests.identity.factories import make_user, personal_org_id, sign_in
from tests.identity.oidc_fixtures import (  # noqa: F401 - fixtures: a real OpenID provider
    fixture_oidc_provider,
    fixture_oidc_provider_post,
)
from tests.s3_fixtures import fixture_s3_client, fixture_s3_endpoint  # noqa: F401 - fixtures

TEST_SECRET = "t3st-only-key-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def pytest_collection_modifyitems(config, items) -> None:
    """CI runs the suite twice (SQLite, then PostgreSQL): tests that use no shared database
    would only repeat themselves in the second pass."""
    if not os.environ.get("ATELIER_TEST_DATABASE_URL"):
        return
    skip = pytest.mark.skip(reason="backend-independent: ran in the SQLite pass")
    for item in items:
        if item.get_closest_marker("backend_independent"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("ATELIER_TEST_DATABASE_URL")
    if url:
        return DatabaseSettings(url=url).url
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'atelier.db'}"


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str):
    """Build Settings for a test from keyword overrides, ignoring any `.env` file."""

    def build(**overrides) -> Settings:
        values = {
            "data_dir": tmp_path / "var",
            "secret_key": TEST_SECRET,
            "database": {"url": database_url},
            "storage": {"root": tmp_path / "blobs"},
            "jobs": {"executor": "inline"},
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test database, migrated to head once per session."""
    engine = create_engine(database_url)
    await migrations.upgrade(engine, "head")
    yield engine
    await engine.dispose()


@pytest.fixture
async def db_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection in an outer transaction, rolled back after the test whatever the code
    under test committed (SQLAlchemy's "join a session into an external transaction")."""
    async with engine.connect() as connection:
        outer = await connection.begin()
        yield connection
        await outer.rollback()


def _joined(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
def db_sessionmaker(db_connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions joined to the test's transaction, for code that opens its own."""
    return _joined(db_connection)


@pytest.fixture
async def db_session(db_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    async with _joined(db_connection)() as session:
        yield session


@pytest.fixture
async def app(settings: Settings, db_connection: AsyncConnection):
    """The application, its sessions joined to the test's transaction. The ASGI transport runs
    no lifespan, so the app's own engine (readiness) is disposed here."""
    app = create_app(settings)
    joined = _joined(db_connection)
    app.state.sessionmaker = joined
    app.state.runtime.sessionmaker = app.state.dispatcher.sessionmaker = joined
    # Standalone submits would insert on the dispatcher's own connection, outside the test's
    # transaction (which it cannot see into); tests/jobs/test_standalone_submit.py covers them.
    app.state.dispatcher.statements = None
    yield app
    await app.state.engine.dispose()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


# ---- live processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def cli_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    """Environment for an `atelier` subprocess: only what the test sets, no `.env` surprises."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        ATELIER_DATA_DIR=str(tmp_path / "var"),
        ATELIER_DATABASE__URL=database_url,
        ATELIER_STORAGE__ROOT=str(tmp_path / "blobs"),
        ATELIER_LOGGING__FORMAT="json",
    )
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "atelier", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def start_server(tmp_path: Path, database_url: str) -> Iterator:
    """Start `atelier <command>` on a free port and wait until /health answers."""
    started: list[LiveServer] = []

    def start(*args: str, database: str | None = None, **env_extra: str) -> LiveServer:
        """`database`: the suite's database URL to share it; by default the server gets a
        SQLite file of its own, so what it commits never leaks into other tests."""
        port = free_port()
        log_path = tmp_path / f"server-{port}.log"
        url = database or f"sqlite+aiosqlite:///{tmp_path / f'live-{port}.db'}"
        env = cli_env(tmp_path, url, **env_extra)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "atelier", *args, "--port", str(port)],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = LiveServer(process, f"http://127.0.0.1:{port}", log_path)
        started.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                time.sleep(0.2)
        pytest.fail(f"server did not answer within 60 s:\n{server.log()}")

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# ---- people --------------------------------------------------------------------------------


@pytest.fixture
async def alice(db_session, client):
    """An owner of her personal organization, signed in."""
    user = await make_user(db_session, display_name="Alice")
    return await sign_in(client, user, await personal_org_id(db_session, user))


@pytest.fixture
async def mallory(db_session, client):
    """A user of another organization, signed in."""
    user = await make_user(db_session, display_name="Mallory")
    return await sign_in(client, user, await personal_org_id(db_session, user))
