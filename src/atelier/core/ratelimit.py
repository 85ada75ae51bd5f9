"""Rate limits on top of the `limits` library: in memory by default, in Redis when
`ATELIER_REDIS_URL` is set (so every API process shares the counts).

`check` refuses a call that is over a limit (429 with Retry-After and RateLimit headers);
`hit` counts one. Keep them apart to count only some outcomes (failed sign-ins); `hit_or_refuse`
does both for plain request limits.

A Redis outage never turns into a 500. While Redis does not answer (refused, reset, or no answer
within `timeout` seconds) the limiter counts in this process's memory instead: one warning when
it switches, `atelier_ratelimit_fallback_total` counts every call answered that way and
`atelier_ratelimit_store_up` reads 0. It asks Redis again at most every `probe_every` seconds
(or when `/readiness` probes it), and goes back to it as soon as it answers.
"""

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import structlog
from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from atelier.core import metrics
from atelier.core.errors import TooManyRequests

log = structlog.get_logger(__name__)
T = TypeVar("T")

# What a Redis that does not answer raises: the storage's own errors (wrapped), a connection
# the OS refuses or resets, or our own deadline.
_UNREACHABLE = (StorageError, OSError, TimeoutError)


class RateLimiter:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        namespace: str = "atelier",
        timeout: float = 0.5,
        probe_every: float = 5.0,
    ) -> None:
        self.namespace = namespace
        self.redis_url = redis_url
        self.timeout = timeout
        self.probe_every = probe_every
        self.memory = MovingWindowRateLimiter(storage_from_string("async+memory://"))
        self.shared: MovingWindowRateLimiter | None = None
        if redis_url:
            from coredis.retry import NoRetryPolicy  # the `redis` extra: only with a Redis URL

            # One try, bounded: an outage falls back to memory rather than retrying in the call.
            redis = storage_from_string(
                f"async+{redis_url}",
                wrap_exceptions=True,
                connect_timeout=timeout,
                stream_timeout=timeout,
                retry_policy=NoRetryPolicy(),
            )
            self.shared = MovingWindowRateLimiter(redis)
        self._down_since: float | None = None  # wall-clock time Redis stopped answering
        self._next_probe = 0.0  # monotonic time of the next try while it is down
        metrics.RATELIMIT_STORE_UP.set(1)

    @property
    def falling_back(self) -> bool:
        return self._down_since is not None

    def describe(self) -> str:
        """Which store counts now, for `/readiness` (no password)."""
        if self.shared is None:
            return "memory (this process only: ATELIER_REDIS_URL is unset)"
        where = _redacted(self.redis_url or "")
        if self.falling_back:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._down_since))
            return f"memory (fallback: {where} unreachable since {since})"
        return f"redis {where}"

    async def probe(self) -> bool:
        """Ask Redis now (bounded by `timeout`) and switch stores on the answer; True if it
        answered or none is configured."""
        if self.shared is None:
            return True
        try:
            answered = await asyncio.wait_for(self.shared.storage.check(), 2 * self.timeout)
        except _UNREACHABLE as exc:
            self._went_down(exc)
            return False
        if not answered:
            self._went_down(ConnectionError("no answer to PING"))
            return False
        self._came_back()
        return True

    async def check(self, limit: str, *key: str, what: str) -> None:
        """Refuse (429) if `key` is already at `limit` (e.g. "5/15 minutes")."""
        item = parse(limit)
        if not await self._run(lambda s: s.test(item, self.namespace, *key)):
            raise await self._refusal(item, key, what)

    async def hit(self, limit: str, *key: str) -> None:
        await self._run(lambda s: s.hit(parse(limit), self.namespace, *key))

    async def hit_or_refuse(self, limit: str, *key: str, what: str) -> None:
        item = parse(limit)
        if not await self._run(lambda s: s.hit(item, self.namespace, *key)):
            raise await self._refusal(item, key, what)

    async def clear(self, limit: str, *key: str) -> None:
        await self._run(lambda s: s.clear(parse(limit), self.namespace, *key))

    async def _run(self, call: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        """`call` on Redis when it answers, else on memory (never an error for an outage)."""
        if self.shared is not None and self._may_ask_redis():
            try:
                result = await asyncio.wait_for(call(self.shared), 4 * self.timeout)
            except _UNREACHABLE as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return result
        if self.shared is not None:
            metrics.RATELIMIT_FALLBACK.inc()
        return await call(self.memory)

    def _may_ask_redis(self) -> bool:
        """Always while it answers; once per `probe_every` while it is down (the caller that
        takes the turn asks, the others count in memory meanwhile)."""
        if not self.falling_back:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.probe_every
        return True

    def _went_down(self, error: BaseException) -> None:
        self._next_probe = time.monotonic() + self.probe_every
        if self.falling_back:
            return
        self._down_since = time.time()
        metrics.RATELIMIT_STORE_UP.set(0)
        log.warning(
            "ratelimit_store_unreachable",
            store=_redacted(self.redis_url or ""),
            error=repr(error),
            fallback="memory",
        )

    def _came_back(self) -> None:
        if not self.falling_back:
            return
        log.warning(
            "ratelimit_store_recovered",
            store=_redacted(self.redis_url or ""),
            down_seconds=round(time.time() - (self._down_since or time.time()), 1),
        )
        self._down_since = None
        metrics.RATELIMIT_STORE_UP.set(1)

    async def _refusal(self, item: RateLimitItem, key: tuple[str, ...], what: str):
        stats = await self._run(lambda s: s.get_window_stats(item, self.namespace, *key))
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        error = TooManyRequests(
            f"Too many {what}: try again in {retry_after} s",
            retry_after=retry_after,
            limit=str(item),
        )
        error.headers.update(
            {
                "RateLimit-Limit": str(item.amount),
                "RateLimit-Remaining": str(max(0, stats.remaining)),
                "RateLimit-Reset": str(retry_after),
            }
        )
        return error


def _redacted(url: str) -> str:
    """`redis://host:port/db` without the user name or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
