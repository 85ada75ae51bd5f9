"""Streamed upload bodies: raw and multipart readers, their limits, file names, upload routes."""

import hashlib

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.types import Message

from atelier.core import problems
from atelier.core.middleware import BodyLimitMiddleware
from atelier.core.uploads import (
    CHUNK_BYTES,
    MAX_FILENAME_LENGTH,
    UPLOAD_OVERHEAD_BYTES,
    multipart_file,
    raw_body,
    safe_filename,
    upload_limit,
    upload_route,
)

BODY_LIMIT = 4096  # every route that is not an upload
UPLOAD_CEILING = 1024 * 1024  # upload routes, in the middleware
FILE_LIMIT = 256 * 1024  # what the routes below accept
BOUNDARY = "b0undary-1234"


router = APIRouter()


@router.post("/raw", **upload_route(field=None))
async def raw(request: Request) -> dict:
    return await _digest(raw_body(request, max_bytes=FILE_LIMIT))


@router.post("/form", **upload_route())
async def form(request: Request) -> dict:
    upload = await multipart_file(request, max_bytes=FILE_LIMIT, max_fields=3, max_field_bytes=64)
    before = dict(upload.fields)
    digest = await _digest(upload.chunks())
    return digest | {
        "filename": upload.filename,
        "content_type": upload.content_type,
        "fields_before": before,
        "fields": upload.fields,
    }


@router.post("/form/document", **upload_route(field="document"))
async def document(request: Request) -> dict:
    upload = await multipart_file(request, field="document", max_bytes=FILE_LIMIT)
    return await _digest(upload.chunks())


@router.post("/echo")
async def echo(request: Request) -> dict:
    return {"size": len(await request.body())}


def build_app() -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=upload_limit([router], default=BODY_LIMIT, upload=UPLOAD_CEILING),
    )
    app.include_router(router)
    return app


async def _digest(chunks) -> dict:
    digest, size, largest = hashlib.sha256(), 0, 0
    async for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        largest = max(largest, len(chunk))
    return {"size": size, "sha256": digest.hexdigest(), "largest_chunk": largest}


@pytest.fixture
def app() -> FastAPI:
    return build_app()


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def form_body(*parts: tuple[str, str | None, bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart body from (name, filename or None, content) parts, in that order."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: text/csv\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


async def in_pieces(data: bytes, size: int = 10_000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


# ---- raw bodies ------------------------------------------------------------------------------


async def test_a_raw_body_streams_in_bounded_chunks(client):
    data = bytes(range(256)) * 1000  # sent as one message by the in-process client
    response = await client.post("/raw", content=data)
    assert response.status_code == 200
    assert response.json() == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "largest_chunk": CHUNK_BYTES,
    }


async def test_a_raw_body_declared_over_the_limit_is_refused_before_reading(client):
    response = await client.post("/raw", content=b"x" * (FILE_LIMIT + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    assert response.json()["limit"] == FILE_LIMIT


async def test_a_raw_body_without_length_is_refused_once_it_passes_the_limit(client):
    sent = []

    async def endless():
        while True:
            sent.append(10_000)
            yield b"x" * 10_000

    response = await client.post("/raw", content=endless())
    assert response.status_code == 413
    assert sum(sent) < FILE_LIMIT + 3 * 10_000  # stopped reading right after the limit


# ---- multipart ---------------------------------------------------------------------------------


async def test_a_multipart_file_streams_with_its_name_type_and_fields(client):
    data = b"a,b\n1,2\n" * 20_000
    response = await client.post(
        "/form",
        data={"purpose": "dataset", "note": "été"},
        files={"file": ("report.csv", data, "text/csv; charset=utf-8")},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "largest_chunk": response.json()["largest_chunk"],
        "filename": "report.csv",
        "content_type": "text/csv",
        "fields_before": {"purpose": "dataset", "note": "été"},
        "fields": {"purpose": "dataset", "note": "été"},
    }
    assert response.json()["largest_chunk"] <= CHUNK_BYTES


async def test_fields_after_the_file_arrive_once_the_file_is_read(client):
    body = form_body(("a", None, b"1"), ("file", "x.csv", b"data"), ("b", None, b"2"))
    response = await client.post("/form", content=in_pieces(body, 7), headers=FORM)
    assert response.status_code == 200, response.text
    assert response.json()["fields_before"] == {"a": "1"}
    assert response.json()["fields"] == {"a": "1", "b": "2"}


async def test_the_file_field_can_be_named(client):
    body = form_body(("document", "x.pdf", b"%PDF"))
    response = await client.post("/form/document", content=body, headers=FORM)
    assert response.json()["size"] == 4


async def test_an_empty_file_is_a_file(client):
    response = await client.post("/form", files={"file": ("empty.txt", b"")})
    assert response.status_code == 200
    assert response.json()["size"] == 0


async def test_a_file_passing_the_limit_midway_is_413(client):
    body = form_body(("file", "big.bin", b"x" * (FILE_LIMIT + 1)))
    response = await client.post("/form", content=in_pieces(body), headers=FORM)
    assert response.status_code == 413
    assert response.json()["limit"] == FILE_LIMIT


async def test_a_multipart_body_declared_far_over_the_limit_is_refused_before_reading(client):
    headers = FORM | {"Content-Length": str(FILE_LIMIT * 3)}
    response = await client.post("/form", content=b"", headers=headers)
    assert response.status_code == 413


MALFORMED = {
    "no boundary": ({"Content-Type": "multipart/form-data"}, form_body(("file", "a", b"1"))),
    "empty boundary": ({"Content-Type": "multipart/form-data; boundary="}, b"--\r\n"),
    "boundary too long": (
        {"Content-Type": "multipart/form-data; boundary=" + "b" * 300},
        b"x",
    ),
    "empty body": (FORM, b""),
    "garbage": (FORM, b"\x00\x01 this is not multipart at all \r\n\r\n"),
    "wrong boundary": (FORM, form_body(("file", "a", b"1"), boundary="other")),
    "no closing boundary": (FORM, form_body(("file", "a", b"123"))[:-20]),
    "cut inside the headers": (FORM, f"--{BOUNDARY}\r\nContent-Dispo".encode()),
    "no file": (FORM, form_body(("purpose", None, b"x"))),
    "file in another field": (FORM, form_body(("upload", "a.csv", b"1"))),
    "two files": (FORM, form_body(("file", "a", b"1"), ("file", "b", b"2"))),
    "a second file after fields": (
        FORM,
        form_body(("file", "a", b"1"), ("x", None, b"1"), ("file", "b", b"2")),
    ),
    "part without a name": (
        FORM,
        f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    ),
    "part without a disposition": (
        FORM,
        f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    ),
    "field too long": (FORM, form_body(("note", None, b"n" * 65), ("file", "a", b"1"))),
    "too many fields": (
        FORM,
        form_body(*[(f"f{i}", None, b"1") for i in range(4)], ("file", "a", b"1")),
    ),
    "a field twice": (FORM, form_body(("a", None, b"1"), ("a", None, b"2"), ("file", "a", b"1"))),
    "field not UTF-8": (FORM, form_body(("note", None, b"\xff\xfe"), ("file", "a", b"1"))),
    "header line too long": (
        FORM,
        f"--{BOUNDARY}\r\nX-Long: {'h' * 5000}\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    ),
    "too many headers": (
        FORM,
        (f"--{BOUNDARY}\r\n" + "X-H: 1\r\n" * 20 + f"\r\nx\r\n--{BOUNDARY}--\r\n").encode(),
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_malformed_multipart_is_a_422_problem(client, case):
    headers, body = MALFORMED[case]
    for content in (body, in_pieces(body, 5)):
        response = await client.post("/form", content=content, headers=headers)
        assert response.status_code == 422, (case, response.text)
        problem = response.json()
        assert problem["type"] == "/problems/validation-error"
        assert problem["detail"]


async def test_a_body_that_is_not_multipart_is_415(client):
    response = await client.post("/form", json={"file": "x"})
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_client_leaving_mid_upload_is_an_aborted_upload_not_a_crash(app):
    body = form_body(("file", "a.bin", b"x" * 50_000))
    messages: list[Message] = [
        {"type": "http.request", "body": body[:20_000], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/form",
        "raw_path": b"/form",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", FORM["Content-Type"].encode()), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"/problems/upload-aborted" in sent[1]["body"]


# ---- which routes get the upload ceiling -------------------------------------------------------


async def test_other_routes_keep_the_global_body_limit(client):
    assert (await client.post("/echo", content=b"x" * BODY_LIMIT)).status_code == 200
    response = await client.post("/echo", content=b"x" * (BODY_LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["limit"] == BODY_LIMIT


async def test_upload_routes_get_the_upload_ceiling_and_their_own_limit(client):
    assert (await client.post("/raw", content=b"x" * FILE_LIMIT)).status_code == 200
    too_big = UPLOAD_CEILING + UPLOAD_OVERHEAD_BYTES + 1
    response = await client.post("/raw", content=b"", headers={"Content-Length": str(too_big)})
    assert response.status_code == 413
    assert response.json()["limit"] == UPLOAD_CEILING + UPLOAD_OVERHEAD_BYTES


async def test_an_upload_path_with_another_method_keeps_the_global_limit(client):
    response = await client.put("/raw", content=b"x" * (BODY_LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["limit"] == BODY_LIMIT


def test_upload_routes_document_their_body(app):
    paths = app.openapi()["paths"]
    form = paths["/form"]["post"]
    assert form["x-atelier-upload"] is True
    schema = form["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["file"] == {"type": "string", "format": "binary"}
    assert "application/octet-stream" in paths["/raw"]["post"]["requestBody"]["content"]
    assert "x-atelier-upload" not in paths["/echo"]["post"]


def test_upload_route_keeps_the_operation_it_extends():
    kwargs = upload_route({"openapi_extra": {"x-atelier-resource": "dataset"}, "summary": "s"})
    assert kwargs["summary"] == "s"
    assert kwargs["openapi_extra"]["x-atelier-resource"] == "dataset"
    assert kwargs["openapi_extra"]["x-atelier-upload"] is True


# ---- file names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("report.csv", "report.csv"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("..", "file"),
        ("...", "file"),
        ("", "file"),
        ("/", "file"),
        ("evil\x00.txt", "evil.txt"),
        ("line\r\nbreak.txt", "linebreak.txt"),
        ("tab\there.txt", "tabhere.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # no right-to-left override
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        (".hidden", "hidden"),
        ("name.", "name"),
        ("a..b...c.txt", "a.b.c.txt"),
        ('what?<>:"|*.txt', "what_______.txt"),
        ("  spaced   out  .csv", "spaced out .csv"),
        ("e\u0301te\u0301.csv", "été.csv"),  # NFC
        ("照片.jpg", "照片.jpg"),
        ("emoji 📷.png", "emoji 📷.png"),
    ],
)
def test_safe_filename(given, shown):
    assert safe_filename(given) == shown


def test_a_long_filename_is_cut_keeping_its_extension():
    name = safe_filename("x" * 1000 + ".tar.gz")
    assert len(name) == MAX_FILENAME_LENGTH
    assert name.endswith("x.gz")
    assert len(safe_filename("y" * 1000)) == MAX_FILENAME_LENGTH
    assert len(safe_filename("z" * 300 + "." + "e" * 40)) == MAX_FILENAME_LENGTH
