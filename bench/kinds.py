"""The no-op job kind the jobs benchmark runs; its workers import it (`ATELIER_JOBS__MODULES`)."""

import os
import time

import redis
from pydantic import BaseModel

from atelier.jobs.registry import registry
from atelier.jobs.runtime import JobContext

LATENCY_ENV = "BENCH_REDIS_URL"
DONE_KEY = "bench:done"
STARTS_KEY = "bench:starts"
_redis: redis.Redis | None = None


def note_start(sent: float) -> None:
    """Count the run; when it carries its submit time, record when it started."""
    global _redis
    started = time.time()
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ[LATENCY_ENV])
    if sent:
        _redis.rpush(STARTS_KEY, started)
    _redis.incr(DONE_KEY)


class Noop(BaseModel):
    sent: float = 0.0


@registry.kind("bench.noop", payload=Noop, max_attempts=1)
async def noop(ctx: JobContext, payload: Noop) -> None:
    note_start(payload.sent)
