"""Job kinds for the tests, registered on the real registry. Worker processes started by the
tests import this module through `ATELIER_JOBS__MODULES=tests.jobs.kinds`."""

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from atelier.jobs.registry import RetryableError, registry
from atelier.jobs.runtime import JobContext


class Empty(BaseModel):
    pass


class Ledgered(BaseModel):
    seconds: float = 0.0
    ledger: str | None = None  # a file each run appends to: "<event> <job> <attempt> <pid>"


def _note(payload: Ledgered, ctx: JobContext, event: str) -> None:
    if payload.ledger:
        with Path(payload.ledger).open("a") as fh:
            fh.write(f"{event} {ctx.job_id} {ctx.attempt} {os.getpid()}\n")


@registry.kind("test.noop", payload=Empty, submitter="member")
async def noop(ctx: JobContext, payload: Empty) -> dict:
    return {"ok": True}


@registry.kind("test.heavy", payload=Empty, submitter="member", queue="ml")
async def heavy(ctx: JobContext, payload: Empty) -> dict:
    """A no-op on a queue of long jobs (a small dispatch window)."""
    return {"ok": True}


@registry.kind("test.work", payload=Ledgered, submitter="member", max_attempts=3)
def work(ctx: JobContext, payload: Ledgered) -> dict:
    """Sleep in small steps (cancellable), then write an output blob idempotently."""
    _note(payload, ctx, "start")
    steps = max(int(payload.seconds / 0.05), 1)
    for step in range(steps):
        ctx.check_cancelled()
        time.sleep(payload.seconds / steps)
        ctx.progress((step + 1) / steps, f"{step + 1}/{steps}")
    ctx.log(f"worked {payload.seconds} s")
    _note(payload, ctx, "done")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


class Flaky(BaseModel):
    succeed_on: int


@registry.kind(
    "test.flaky", payload=Flaky, submitter="member", max_attempts=3, backoff=timedelta(0)
)
def flaky(ctx: JobContext, payload: Flaky) -> dict:
    if ctx.attempt < payload.succeed_on:
        raise RetryableError(f"not yet (attempt {ctx.attempt})")
    return {"attempt": ctx.attempt}


@registry.kind(
    "test.flaky_backoff", payload=Flaky, submitter="member", backoff=timedelta(minutes=1)
)
def flaky_backoff(ctx: JobContext, payload: Flaky) -> dict:
    return flaky(ctx, payload)


@registry.kind("test.boom", payload=Empty, submitter="member")
def boom(ctx: JobContext, payload: Empty) -> None:
    raise ValueError("the handler broke")


@registry.kind(
    "test.cooperative_slow", payload=Empty, submitter="member", timeout=timedelta(seconds=1)
)
def cooperative_slow(ctx: JobContext, payload: Empty) -> None:
    while True:
        ctx.check_cancelled()
        time.sleep(0.02)


@registry.kind("test.async_slow", payload=Empty, submitter="member", timeout=timedelta(seconds=1))
async def async_slow(ctx: JobContext, payload: Empty) -> None:
    await asyncio.sleep(3600)


@registry.kind("test.stubborn", payload=Empty, submitter="member", timeout=timedelta(seconds=1))
def stubborn(ctx: JobContext, payload: Empty) -> None:
    """Ignores its time limit: only ending its process stops it."""
    time.sleep(3)


@registry.kind("test.not_json", payload=Empty, submitter="member")
def not_json(ctx: JobContext, payload: Empty) -> object:
    return object()
