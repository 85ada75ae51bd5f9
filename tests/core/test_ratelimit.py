"""The rate limiter's Redis outage policy, on real sockets: bounded calls, one try per probe
interval while Redis is down, and the way back once it answers (tests/test_redis_outage.py
covers the same through the API)."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from atelier.core.errors import TooManyRequests
from atelier.core.ratelimit import RateLimiter
from tests.conftest import free_port
from tests.redis_fixtures import PrivateRedis, needs_redis_server


class SilentServer:
    """A loopback listener that accepts connections and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by `close`
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


async def test_a_hung_redis_costs_one_bounded_try_per_probe_interval(silent_server):
    limiter = RateLimiter(f"redis://127.0.0.1:{silent_server.port}/0", timeout=0.2, probe_every=60)
    with structlog.testing.capture_logs() as logs:
        begin = time.monotonic()
        for _ in range(3):
            await limiter.hit_or_refuse("3/minute", "caller", what="calls")
        first_calls = time.monotonic() - begin
        with pytest.raises(TooManyRequests):  # counted in memory meanwhile
            await limiter.hit_or_refuse("3/minute", "caller", what="calls")
    assert first_calls < 2, "a Redis that does not answer held the calls"
    assert len(silent_server.accepted) == 1, "the limiter asked Redis again before probe_every"
    assert [e["event"] for e in logs] == ["ratelimit_store_unreachable"]
    assert limiter.describe().startswith(
        f"memory (fallback: redis://127.0.0.1:{silent_server.port}/0 unreachable since "
    )


def test_the_store_is_named_without_its_password():
    limiter = RateLimiter("redis://user:s3cret@cache.internal:6380/2")
    assert limiter.describe() == "redis redis://cache.internal:6380/2"
    assert RateLimiter().describe().startswith("memory")


@needs_redis_server
async def test_the_limiter_goes_back_to_redis_after_probe_every(tmp_path: Path):
    server = PrivateRedis(free_port(), tmp_path)
    limiter = RateLimiter(server.url, timeout=0.2, probe_every=0.3)
    await limiter.hit("5/minute", "before")  # nothing listens yet: counted in memory
    assert limiter.falling_back
    server.start()
    try:
        await limiter.hit("5/minute", "soon")  # within probe_every: still memory
        assert limiter.falling_back
        assert not server.client().keys("*")
        await asyncio.sleep(0.4)
        await limiter.hit("5/minute", "after")
        assert not limiter.falling_back
        keys = [key.decode() for key in server.client().keys("*")]
        assert len(keys) == 1, keys
        assert "after" in keys[0]
    finally:
        server.stop()
