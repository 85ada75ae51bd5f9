"""Rate limits on top of the `limits` library: in memory by default, in Redis when
`ATELIER_REDIS_URL` is set (so every API process shares the counts).

`check` refuses a call that is over a limit (429 with Retry-After and RateLimit headers);
`hit` counts one. Keep them apart to count only some outcomes (failed sign-ins); `hit_or_refuse`
does both for plain request limits.
"""

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from atelier.core.errors import TooManyRequests


class RateLimiter:
    def __init__(self, redis_url: str | None = None, *, namespace: str = "atelier") -> None:
        uri = f"async+{redis_url}" if redis_url else "async+memory://"
        self.storage = storage_from_string(uri)
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.namespace = namespace

    async def check(self, limit: str, *key: str, what: str) -> None:
        """Refuse (429) if `key` is already at `limit` (e.g. "5/15 minutes")."""
        item = parse(limit)
        if not await self.strategy.test(item, self.namespace, *key):
            raise await self._refusal(item, key, what)

    async def hit(self, limit: str, *key: str) -> None:
        await self.strategy.hit(parse(limit), self.namespace, *key)

    async def hit_or_refuse(self, limit: str, *key: str, what: str) -> None:
        item = parse(limit)
        if not await self.strategy.hit(item, self.namespace, *key):
            raise await self._refusal(item, key, what)

    async def clear(self, limit: str, *key: str) -> None:
        await self.strategy.clear(parse(limit), self.namespace, *key)

    async def _refusal(self, item: RateLimitItem, key: tuple[str, ...], what: str):
        stats = await self.strategy.get_window_stats(item, self.namespace, *key)
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
