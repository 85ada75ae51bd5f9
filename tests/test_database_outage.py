"""A database that cannot be reached answers 503 `database-unavailable` with `Retry-After`, and
the API recovers by itself when the database is back; it holds up nothing meanwhile.

SQLite's outage is another writer holding the lock past the busy timeout. PostgreSQL's is a TCP
proxy the test owns, between the app and the server: it drops every connection and refuses new
ones, then forwards again (the shared server itself cannot be stopped)."""

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

import tests.jobs.kinds  # noqa: F401 - registers test.noop
from atelier.app import create_app
from atelier.core.db import create_engine
from atelier.ops import migrations
from tests import failing_app
from tests.conftest import LiveServer, free_port
from tests.failing_app import READ_PATH
from tests.failing_app import router as failing_router
from tests.identity.factories import make_user, personal_org_id, sign_in
from tests.own_database import own_database

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("ATELIER_TEST_DATABASE_URL", "")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL.startswith("postgres"), reason="the proxy stands in front of PostgreSQL"
)


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    problem = response.json()
    assert problem["type"] == "/problems/database-unavailable"
    assert "try again" in problem["detail"].lower()
    assert "127.0.0.1" not in response.text
    assert "postgres" not in response.text.lower()


async def signed_in(app, client: httpx.AsyncClient):
    async with app.state.sessionmaker() as session:
        user = await make_user(session)
        org_id = await personal_org_id(session, user)
    return await sign_in(client, user, org_id)


async def submit(client: httpx.AsyncClient, who) -> httpx.Response:
    body = {"kind": "test.noop", "payload": {}}
    return await client.post("/api/v1/jobs", json=body, headers=who.headers)


# ---- SQLite: a lock held past the busy timeout -----------------------------------------------


@pytest.mark.backend_independent  # a SQLite file of its own
async def test_a_write_behind_a_held_lock_is_a_503_then_succeeds(make_settings, tmp_path: Path):
    path = tmp_path / "locked.db"
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(url)
    await migrations.upgrade(engine, "head")
    await engine.dispose()
    app = create_app(make_settings(database={"url": url, "connect_timeout": 0.5}))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            alice = await signed_in(app, client)
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another writer, past the 0.5 s busy timeout
            try:
                assert_database_unavailable(await submit(client, alice))
            finally:
                holder.rollback()
                holder.close()
            assert (await submit(client, alice)).status_code == 202
    finally:
        await app.state.engine.dispose()


# ---- PostgreSQL: a server that cannot be reached at all --------------------------------------


@pytest.mark.backend_independent  # no server: nothing listens there
@pytest.mark.parametrize("where", ["refused", "unresolvable"])
async def test_a_server_that_cannot_be_reached_is_a_503(make_settings, where: str):
    """asyncpg raises the socket's own error when it cannot connect (SQLAlchemy does not wrap
    it): a refused connection, or a host name that does not resolve."""
    host = f"127.0.0.1:{free_port()}" if where == "refused" else "db.invalid"
    app = create_app(make_settings(database={"url": f"postgresql://nobody@{host}/none"}))
    app.include_router(failing_router)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert_database_unavailable(await client.get(READ_PATH))
    finally:
        await app.state.engine.dispose()


# ---- PostgreSQL: a proxy that cuts the server off ----------------------------------------------


class Proxy:
    """A TCP proxy on a free loopback port to `target`, in a thread of its own. `cut()` drops
    every connection and stops listening (new ones are refused); `restore()` listens again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.WriteTransport] = set()

    def __enter__(self) -> "Proxy":
        self.thread.start()
        self.restore()
        return self

    def __exit__(self, *exc_info) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def restore(self) -> None:
        async def listen() -> None:
            self.server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

        self._run(listen())

    def cut(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for transport in list(self.transports):
                transport.abort()
            self.transports.clear()

        self._run(close())

    async def _forward(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self.transports |= {client_w.transport, server_w.transport}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        self.transports -= {client_w.transport, server_w.transport}


@pytest.fixture
async def migrated_database(tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a migrated PostgreSQL database of this test's own (its rows are committed for
    real)."""
    async with own_database(tmp_path, "outage") as engine:
        await migrations.upgrade(engine, "head")
        yield engine.url.render_as_string(hide_password=False)


@pytest.fixture
def proxied(migrated_database: str) -> Iterator[tuple[Proxy, str]]:
    """The proxy, and the database URL through it."""
    url = make_url(migrated_database)
    with Proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port)
        yield proxy, through.render_as_string(hide_password=False)


@needs_postgres
async def test_an_outage_is_a_503_and_the_api_recovers_without_a_restart(make_settings, proxied):
    proxy, url = proxied
    app = create_app(make_settings(database={"url": url, "connect_timeout": 2}))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            alice = await signed_in(app, client)
            assert (await submit(client, alice)).status_code == 202
            proxy.cut()
            assert_database_unavailable(await client.get("/api/v1/jobs", headers=alice.headers))
            assert_database_unavailable(await submit(client, alice))
            proxy.restore()
            listed = await client.get("/api/v1/jobs", headers=alice.headers)
            assert listed.status_code == 200, listed.text
            assert (await submit(client, alice)).status_code == 202
    finally:
        await app.state.dispatcher.close()
        await app.state.engine.dispose()


# ---- the outage holds up nothing -------------------------------------------------------------


@pytest.fixture
def live_server(tmp_path: Path, proxied) -> Iterator[tuple[Proxy, LiveServer]]:
    """`tests.failing_app:build` under uvicorn as `atelier api` runs it, through the proxy, with
    the default log format (console)."""
    proxy, url = proxied
    with failing_app.serve(tmp_path, url) as server:
        yield proxy, server


@pytest.mark.live
@needs_postgres
def test_reads_during_an_outage_do_not_hold_up_health(live_server):
    """Ten concurrent reads, three times over, while the database is cut off and /health is
    polled: every read is a 503 and every /health answers within 100 ms. Warmed up first, as in
    tests/test_error_paths.py: a cold server's first burst is slow whatever it answers."""
    proxy, server = live_server
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    reads = httpx.Client(base_url=server.url, timeout=60, limits=limits)
    probe = httpx.Client(base_url=server.url, timeout=30)
    with reads, probe, ThreadPoolExecutor(10) as pool:
        warm = list(pool.map(lambda _: reads.get(READ_PATH), range(10)))
        assert {r.status_code for r in warm} == {200}
        time.sleep(0.3)  # their sessions close after the response: not on a cut connection
        done = threading.Event()
        health: list[tuple[float, int]] = []  # (latency, status)

        def poll_health() -> None:
            while not done.is_set():
                begin = time.perf_counter()
                status = probe.get("/health").status_code
                health.append((time.perf_counter() - begin, status))
                time.sleep(0.02)

        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            proxy.cut()
            responses: list[httpx.Response] = []
            for _ in range(3):
                responses += pool.map(lambda _: reads.get(READ_PATH), range(10))
            proxy.restore()
            recovered = reads.get(READ_PATH)
            time.sleep(0.2)
        finally:
            done.set()
            poller.join()
    for response in responses:
        assert_database_unavailable(response)
    assert recovered.status_code == 200, recovered.text
    assert len(health) >= 10
    assert {status for _, status in health} == {200}
    slow = [round(latency, 3) for latency, _ in health if latency >= 0.1]
    assert slow == [], health
    log = server.log()
    assert log.count("database_unavailable") == 30
    assert "Traceback" not in log
