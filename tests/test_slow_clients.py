"""Slow clients against a live `atelier api`: trickled headers and bodies are cut off within
the configured deadlines, while a client that sends at a reasonable pace is served.

The server runs with short limits (2 s) so the test is quick; the margins allow for a loaded
two-core machine. Raw sockets, because an HTTP client library would send headers at once.
"""

import asyncio
import json
import time
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.live

HEADER_TIMEOUT = 2.0
BODY_IDLE = 2.0
BODY_GRACE = 2.0
MIN_RATE = 1024
MARGIN = 2.5
LIMITS = {
    "ATELIER_HTTP__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "ATELIER_HTTP__BODY_IDLE_TIMEOUT_SECONDS": str(BODY_IDLE),
    "ATELIER_HTTP__BODY_GRACE_SECONDS": str(BODY_GRACE),
    "ATELIER_HTTP__BODY_MIN_BYTES_PER_SECOND": str(MIN_RATE),
}
REGISTER = "/api/v1/auth/register"


@pytest.fixture
def server(start_server):
    return start_server("up", ATELIER_JOBS__EXECUTOR="inline", **LIMITS)


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def _trickle(url: str, head: bytes, pieces: list[bytes], every: float, give_up: float):
    """Send `head`, then one piece every `every` seconds until the server answers or closes.
    Returns (seconds until it did, what it sent back); `give_up` bounds the wait.

    The pieces go out half a period off the whole seconds where the server's deadlines fall:
    a piece arriving after the server closed would be answered with a reset, which discards
    the 408 still unread on the client's side."""
    reader, writer = await _connect(url)
    began = time.monotonic()
    answer = b""
    try:
        writer.write(head)
        await writer.drain()
        for n, piece in enumerate(pieces):
            try:
                wait = every / 2 if n == 0 else every
                data = await asyncio.wait_for(reader.read(65536), timeout=wait)
            except TimeoutError:
                data = None
            if data is not None:  # an answer or end of file: the server is done with us
                answer = data + await asyncio.wait_for(reader.read(), timeout=5)
                return time.monotonic() - began, answer
            if time.monotonic() - began > give_up:
                break
            try:
                writer.write(piece)
                await writer.drain()
            except ConnectionError:
                break
        answer = await asyncio.wait_for(reader.read(), timeout=max(0.1, give_up))
        return time.monotonic() - began, answer
    except (ConnectionError, TimeoutError):
        return time.monotonic() - began, answer
    finally:
        writer.close()


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


def _problem(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    return json.loads(body)


async def test_sixty_connections_trickling_headers_are_closed_within_the_timeout(server):
    head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
    give_up = HEADER_TIMEOUT + 10
    results = await asyncio.gather(
        *(_trickle(server.url, head, [b"a"] * 30, every=1.0, give_up=give_up) for _ in range(60))
    )
    for elapsed, answer in results:
        assert elapsed < HEADER_TIMEOUT + MARGIN, (elapsed, answer)
        assert _status(answer) == 408, answer
        assert _problem(answer)["type"] == "/problems/request-timeout"
    # The server is still there for everyone else.
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(server.url + "/health")).status_code == 200


async def test_a_connection_that_never_sends_a_request_is_closed(server):
    reader, writer = await _connect(server.url)
    began = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), timeout=HEADER_TIMEOUT + 10) == b""
    finally:
        writer.close()
    assert time.monotonic() - began < HEADER_TIMEOUT + MARGIN


async def test_blank_lines_between_requests_do_not_keep_a_connection_open(server):
    # llhttp skips empty lines before a request line, which also cancels uvicorn's keep-alive
    # timer each time: without a header deadline this holds the connection forever.
    elapsed, answer = await _trickle(
        server.url, b"\r\n", [b"\r\n"] * 30, every=1.0, give_up=HEADER_TIMEOUT + 10
    )
    assert elapsed < HEADER_TIMEOUT + MARGIN
    assert answer == b""


def _post_head(path: str, length: int, *, close: bool = False) -> bytes:
    connection = "close" if close else "keep-alive"
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"
    ).encode()


async def test_five_uploads_at_one_byte_per_second_get_408_after_the_grace_period(server):
    give_up = BODY_GRACE + 10
    results = await asyncio.gather(
        *(
            _trickle(server.url, _post_head(REGISTER, 400), [b" "] * 30, every=1.0, give_up=give_up)
            for _ in range(5)
        )
    )
    for elapsed, answer in results:
        assert elapsed < BODY_GRACE + MARGIN, (elapsed, answer)
        assert _status(answer) == 408, answer
        problem = _problem(answer)
        assert problem["status"] == 408
        assert "bytes per second" in problem["detail"]


async def test_a_body_that_stops_arriving_gets_408_after_the_idle_timeout(server):
    reader, writer = await _connect(server.url)
    began = time.monotonic()
    try:
        writer.write(_post_head(REGISTER, 4096) + b" " * 2048)  # half, then nothing
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=BODY_IDLE + 10)
    finally:
        writer.close()
    assert time.monotonic() - began < BODY_IDLE + MARGIN
    assert _status(answer) == 408
    assert "no part of the body" in _problem(answer)["detail"]


async def test_a_body_the_app_never_reads_is_cut_off_too(server):
    # /health answers 405 to a POST without reading the body; the trickled body still holds
    # the connection (each byte cancels uvicorn's keep-alive timer) unless it is timed too.
    elapsed, answer = await _trickle(
        server.url,
        _post_head("/health", 400),
        [b" "] * 30,
        every=1.0,
        give_up=BODY_GRACE + 10,
    )
    assert _status(answer) == 405  # the answer came first, then the connection was closed
    assert elapsed < BODY_GRACE + MARGIN


async def test_an_upload_at_a_reasonable_pace_is_served(server):
    # 16 KiB/s for about five seconds: longer than the grace period and the idle timeout,
    # well above the minimum rate. It must reach the app whole.
    account = {
        "email": "pace@example.com",
        "password": "a long enough passw0rd",
        "display_name": "P",
    }
    body = json.dumps(account).encode().ljust(80 * 1024)
    reader, writer = await _connect(server.url)
    try:
        writer.write(_post_head(REGISTER, len(body), close=True))
        for start in range(0, len(body), 4096):
            writer.write(body[start : start + 4096])
            await writer.drain()
            await asyncio.sleep(0.25)
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert _status(answer) == 201, answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["email"] == "pace@example.com"
