"""Uploads over HTTP into the storage domain, through a small app built here: in process (ASGI)
for quotas, file names and bad bodies, and over real sockets to a live uvicorn for what only a
network shows (413 before the body is sent, clients that leave, memory)."""

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from select import select as readable
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.adapters.blobs.local import LocalBlobStore
from atelier.core import problems
from atelier.core.blobs import org_key
from atelier.core.clock import Clock, SystemClock
from atelier.core.db import create_engine, create_sessionmaker, transaction
from atelier.core.ids import new_id
from atelier.core.middleware import BodyLimitMiddleware
from atelier.core.principal import Principal
from atelier.core.uploads import (
    CHUNK_BYTES,
    multipart_file,
    raw_body,
    safe_filename,
    upload_limit,
    upload_route,
)
from atelier.ops import migrations
from atelier.plans import service as plans_service
from atelier.plans.models import Plan
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob

SECRET = "s" * 8 + "0123456789abcdefghij"
BODY_LIMIT = 64 * 1024
MiB = 1024 * 1024

# ---- the app under test ----------------------------------------------------------------------

router = APIRouter(prefix="/orgs/{org_id}")


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


Session = Annotated[AsyncSession, Depends(_session)]


def _read(blob: StoredBlob) -> dict:
    fields = ("id", "key", "size", "sha256", "filename", "content_type", "purpose")
    return {name: getattr(blob, name) for name in fields}


@router.post("/files", status_code=201, **upload_route())
async def upload_file(org_id: str, request: Request, session: Session, plan: str = "free") -> dict:
    state = request.app.state
    plan_row = await plans_service.get_plan(session, plan)
    upload = await multipart_file(request, max_bytes=state.max_bytes)
    blob = await storage.save_upload(
        session,
        state.blobs,
        org_id=org_id,
        plan=plan_row,
        key=org_key(org_id, "uploads", new_id("up")),
        chunks=upload.chunks(),
        content_type=upload.content_type,
        filename=upload.filename,
        max_bytes=state.max_bytes,
        clock=state.clock,
        purpose=upload.fields.get("purpose", "upload"),
    )
    return _read(blob) | {"fields": upload.fields}


@router.put("/raw", status_code=201, **upload_route(field=None))
async def upload_raw(org_id: str, request: Request, session: Session, name: str = "") -> dict:
    state = request.app.state
    blob = await storage.save_upload(
        session,
        state.blobs,
        org_id=org_id,
        plan=await plans_service.get_plan(session, "enterprise"),
        key=org_key(org_id, "uploads", new_id("up")),
        chunks=raw_body(request, max_bytes=state.max_bytes),
        content_type="application/octet-stream",
        filename=safe_filename(name),
        max_bytes=state.max_bytes,
        clock=state.clock,
    )
    return _read(blob)


@router.delete("/files/{blob_id}", status_code=204)
async def delete_file(org_id: str, blob_id: str, request: Request, session: Session) -> Response:
    blob = await storage.get_blob(session, Principal(org_id=org_id, role="member"), blob_id)
    await storage.delete_blob(session, request.app.state.blobs, blob)
    return Response(status_code=204)


@router.get("/usage")
async def usage(org_id: str, session: Session) -> dict:
    return {"bytes": await storage.storage_used(session, org_id)}


def build_app(
    *, sessionmaker: async_sessionmaker, blobs: LocalBlobStore, clock: Clock, max_bytes: int
) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=upload_limit([router], default=BODY_LIMIT, upload=max_bytes),
    )
    app.state.sessionmaker = sessionmaker
    app.state.blobs = blobs
    app.state.clock = clock
    app.state.max_bytes = max_bytes
    app.include_router(router)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def live_app() -> FastAPI:
    """Factory for the uvicorn process the live tests start (`--factory`)."""
    engine = create_engine(os.environ["UPLOADS_TEST_DATABASE"])
    return build_app(
        sessionmaker=create_sessionmaker(engine),
        blobs=LocalBlobStore(
            Path(os.environ["UPLOADS_TEST_BLOBS"]), secret=SECRET, clock=SystemClock()
        ),
        clock=SystemClock(),
        max_bytes=int(os.environ["UPLOADS_TEST_MAX_BYTES"]),
    )


# ---- in process --------------------------------------------------------------------------------

ASGI_MAX = 256 * 1024


class RecordingStore(LocalBlobStore):
    """The local store, noting the largest chunk it was handed."""

    largest_chunk = 0

    async def put(self, key, chunks, **kwargs):
        async def noted():
            async for chunk in chunks:
                self.largest_chunk = max(self.largest_chunk, len(chunk))
                yield chunk

        return await super().put(key, noted(), **kwargs)


@pytest.fixture
def blobs(tmp_path):
    return RecordingStore(tmp_path / "blobs", secret=SECRET, clock=SystemClock())


@pytest.fixture
async def client(db_connection, blobs):
    sessions = async_sessionmaker(
        bind=db_connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    app = build_app(sessionmaker=sessions, blobs=blobs, clock=SystemClock(), max_bytes=ASGI_MAX)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def tiny_plan(db_session):
    async with transaction(db_session):
        db_session.add(Plan(id="tiny", name="Tiny", max_storage_bytes=1000))
    return "tiny"


def stored_files(root: Path, org_id: str) -> list[Path]:
    """Every file under the organization's namespace, temporary ones included."""
    return sorted(p for p in (root / "orgs" / org_id).rglob("*") if p.is_file())


async def row_count(session, org_id: str) -> int:
    return await session.scalar(
        select(func.count()).select_from(StoredBlob).where(StoredBlob.org_id == org_id)
    )


HOSTILE_NAMES = {
    "../../etc/passwd": "passwd",
    "..\\..\\boot.ini": "boot.ini",
    "nul\x00byte.txt": "nulbyte.txt",
    "x" * 500 + ".csv": "x" * 196 + ".csv",
    "rapport été 📈.csv": "rapport été 📈.csv",
    "\u202egnp.exe": "gnp.exe",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_file_names_are_only_display_names(client, blobs, db_session, name):
    # Built by hand: httpx would percent-encode the control characters.
    body = (
        f'--xyz\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
        "data\r\n--xyz--\r\n"
    ).encode()
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    response = await client.post("/orgs/org_h/files", content=body, headers=headers)
    assert response.status_code == 201, response.text
    blob = response.json()
    assert blob["filename"] == HOSTILE_NAMES[name]
    assert blob["key"].startswith("orgs/org_h/uploads/up_")
    [stored] = [p for p in stored_files(blobs.root, "org_h") if not p.name.endswith(".json")]
    assert stored.name == blob["key"].rsplit("/", 1)[1]
    assert (await db_session.get(StoredBlob, blob["id"])).filename == HOSTILE_NAMES[name]


async def test_an_upload_reaches_the_store_in_bounded_chunks(client, blobs):
    data = os.urandom(ASGI_MAX)  # sent as a single message by the in-process client
    response = await client.post(
        "/orgs/org_c/files",
        data={"purpose": "dataset"},
        files={"file": ("data.bin", data, "application/x-thing")},
    )
    assert response.status_code == 201, response.text
    blob = response.json()
    assert (blob["size"], blob["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (blob["purpose"], blob["content_type"]) == ("dataset", "application/x-thing")
    assert 0 < blobs.largest_chunk <= CHUNK_BYTES


async def test_a_raw_upload_is_stored_too(client):
    response = await client.put("/orgs/org_r/raw?name=../notes.txt", content=b"hello")
    assert response.status_code == 201, response.text
    assert (response.json()["size"], response.json()["filename"]) == (5, "notes.txt")


async def test_storage_quota_over_http(client, blobs, db_session, tiny_plan):
    url = f"/orgs/org_q/files?plan={tiny_plan}"
    first = await client.post(url, files={"file": ("a.bin", b"a" * 600)})
    assert first.status_code == 201

    # Would pass the limit midway: 402, and nothing of it is kept.
    response = await client.post(url, files={"file": ("b.bin", b"b" * 600)})
    assert response.status_code == 402
    problem = response.json()
    assert (problem["meter"], problem["limit"], problem["used"]) == ("storage_bytes", 1000, 600)
    assert len(stored_files(blobs.root, "org_q")) == 2  # the first blob and its metadata
    assert await row_count(db_session, "org_q") == 1

    assert (await client.post(url, files={"file": ("c.bin", b"c" * 400)})).status_code == 201
    # At the limit: refused before the body is read.
    response = await client.post(url, files={"file": ("d.bin", b"d")})
    assert response.status_code == 402
    assert response.json()["used"] == 1000

    # Deleting frees the space.
    deleted = await client.delete(f"/orgs/org_q/files/{first.json()['id']}")
    assert deleted.status_code == 204
    assert (await client.get("/orgs/org_q/usage")).json() == {"bytes": 400}
    assert (await client.post(url, files={"file": ("e.bin", b"e" * 600)})).status_code == 201


async def test_another_organizations_file_cannot_be_deleted(client):
    blob = (await client.post("/orgs/org_a/files", files={"file": ("a", b"1")})).json()
    response = await client.delete(f"/orgs/org_b/files/{blob['id']}")
    assert response.status_code == 404
    assert (await client.get("/orgs/org_a/usage")).json() == {"bytes": 1}


async def test_a_file_passing_the_request_limit_midway_leaves_nothing(client, blobs, db_session):
    boundary = "xyz"

    async def body():
        yield f"--{boundary}\r\n".encode()
        yield b'Content-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
        for _ in range(ASGI_MAX // 8192 + 2):
            yield b"z" * 8192
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = await client.post("/orgs/org_l/files", content=body(), headers=headers)
    assert response.status_code == 413
    assert response.json()["limit"] == ASGI_MAX
    assert stored_files(blobs.root, "org_l") == []
    assert await row_count(db_session, "org_l") == 0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\ncut here',
        b'--xyz\r\nContent-Disposition: form-data; name="other"; filename="f"\r\n\r\n1\r\n--xyz--',
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n1\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n2\r\n--xyz--',
    ],
)
async def test_malformed_uploads_are_422_and_leave_nothing(client, blobs, db_session, body):
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    response = await client.post("/orgs/org_m/files", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert stored_files(blobs.root, "org_m") == []
    assert await row_count(db_session, "org_m") == 0


# ---- over real sockets ---------------------------------------------------------------------------

LIVE_MAX = 72 * MiB
BOUNDARY = "live-boundary-7f3a"
FILE_HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()
FILE_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass
class Live:
    process: subprocess.Popen
    port: int
    url: str
    blobs: Path
    database: Path
    log_path: Path

    def rows(self, org_id: str) -> int:
        with sqlite3.connect(self.database) as db:
            query = "SELECT count(*) FROM stored_blobs WHERE org_id = ?"
            return db.execute(query, (org_id,)).fetchone()[0]

    def peak_memory(self) -> int:
        """The server's peak resident set size so far, in bytes (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    await migrations.upgrade(engine, "head")
    await engine.dispose()


@pytest.fixture(scope="module")
async def live_database(tmp_path_factory) -> Path:
    """A SQLite file of the live server's own (it commits for real), migrated."""
    database = tmp_path_factory.mktemp("live-uploads") / "live.db"
    await _migrate(f"sqlite+aiosqlite:///{database}")
    return database


@pytest.fixture(scope="module")
def live(live_database: Path) -> Iterator[Live]:
    """A uvicorn process serving `live_app`."""
    root, database = live_database.parent, live_database
    url = f"sqlite+aiosqlite:///{database}"
    port = _free_port()
    env = dict(
        os.environ,
        UPLOADS_TEST_DATABASE=url,
        UPLOADS_TEST_BLOBS=str(root / "blobs"),
        UPLOADS_TEST_MAX_BYTES=str(LIVE_MAX),
    )
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:live_app"),
                *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
            ],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Live(process, port, f"http://127.0.0.1:{port}", root / "blobs", database, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited:\n{log_path.read_text()}")
            try:
                if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _connect(live: Live, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    sock.sendall(head.encode())
    return sock


def _head(path: str, **headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def _chunk(data: bytes) -> bytes:
    """One frame of chunked transfer encoding."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _wait_for(condition, *, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.mark.live
def test_an_upload_declared_over_the_limit_is_refused_before_its_body_is_sent(live):
    declared = str(LIVE_MAX + 1024 * 1024)  # over the route's limit, under the ceiling
    with _connect(
        live, _head("/orgs/org_d/files", Content_Type=MULTIPART, Content_Length=declared)
    ) as sock:
        status, headers, body = _read_response(sock)  # not one byte of the body was sent
    assert status == 413
    assert headers["connection"] == "close"
    assert b"payload-too-large" in body

    over_ceiling = str(LIVE_MAX * 4)  # refused by the middleware, before the route runs
    with _connect(
        live, _head("/orgs/org_d/files", Content_Type=MULTIPART, Content_Length=over_ceiling)
    ) as sock:
        status, headers, _ = _read_response(sock)
    assert status == 413
    assert live.rows("org_d") == 0


@pytest.mark.live
def test_a_chunked_upload_passing_the_limit_is_refused_midway(live):
    head = _head("/orgs/org_k/files", Content_Type=MULTIPART, Transfer_Encoding="chunked")
    block = b"k" * (256 * 1024)
    with _connect(live, head) as sock:
        sock.sendall(_chunk(FILE_HEAD))
        sent = 0
        # Until just past the limit, or until the server answers (it then closes).
        while sent <= LIVE_MAX and not readable([sock], [], [], 0)[0]:
            try:
                sock.sendall(_chunk(block))
            except (BrokenPipeError, ConnectionResetError):
                break  # answered and closed between the check and the send
            sent += len(block)
        # The body is not finished (no closing boundary, no last chunk), yet the answer comes.
        status, headers, body = _read_response(sock)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["limit"] == LIVE_MAX  # the route's file limit, not the ceiling
    assert _wait_for(lambda: not stored_files(live.blobs, "org_k"))
    assert live.rows("org_k") == 0


@pytest.mark.live
def test_a_client_that_disconnects_midway_leaves_no_object_and_no_row(live):
    head = _head("/orgs/org_x/files", Content_Type=MULTIPART, Content_Length=str(50 * MiB))
    with _connect(live, head) as sock:
        sock.sendall(FILE_HEAD + b"x" * (4 * MiB))
        # The upload is under way: its temporary file exists.
        assert _wait_for(lambda: stored_files(live.blobs, "org_x")), live.log_path.read_text()
    # The socket is closed with 46 MiB still to come.
    assert _wait_for(lambda: not stored_files(live.blobs, "org_x")), stored_files(
        live.blobs, "org_x"
    )
    assert live.rows("org_x") == 0
    assert httpx.get(live.url + "/health", timeout=5).status_code == 200


@pytest.mark.live
def test_a_large_upload_is_streamed_not_held_in_memory(live):
    def body(blocks: int) -> Iterator[bytes]:
        yield FILE_HEAD
        for n in range(blocks):
            yield bytes([n % 256]) * CHUNK_BYTES
        yield FILE_TAIL

    def upload(blocks: int) -> dict:
        response = httpx.post(
            live.url + "/orgs/org_big/files",
            content=body(blocks),
            headers={"Content-Type": MULTIPART},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return response.json()

    upload(16)  # warm up every code path first
    before = live.peak_memory()
    blocks = 64 * MiB // CHUNK_BYTES
    blob = upload(blocks)
    growth = live.peak_memory() - before

    expected = hashlib.sha256()
    for n in range(blocks):
        expected.update(bytes([n % 256]) * CHUNK_BYTES)
    assert (blob["size"], blob["sha256"]) == (64 * MiB, expected.hexdigest())
    # Held whole, 64 MiB would show here at least once; streamed, a few chunks do.
    assert growth < 16 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"
