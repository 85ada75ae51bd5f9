"""Job kinds and periodic tasks: what a handler is, and how one is registered.

A handler is a plain function registered for a kind, with a Pydantic payload model:

    @registry.kind("system.sleep", payload=SleepPayload, timeout=timedelta(minutes=10))
    def sleep(ctx: JobContext, payload: SleepPayload) -> dict: ...

It may be `def` (run in a worker thread, for CPU-bound or blocking work) or `async def` (run on
the worker's event loop). It returns a JSON-able result (or None). It raises `RetryableError` for
a failure worth another attempt; anything else fails the job at once.

Handlers must be idempotent per job: a job can run twice (a worker lost mid-run, a re-delivered
message). Write outputs under `ctx.output_key(...)` (the same keys on every attempt) and key
database side effects by `ctx.job_id`; the job's own result is written once, fenced by attempt.

`atelier.job_kinds` imports every domain's `jobs.py` so each process sees the same registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from atelier.jobs.runtime import JobContext, Runtime
    from atelier.settings import Settings

QUEUES = ("default", "ml", "media", "gpu")
HEAVY_QUEUES = ("ml", "gpu")  # jobs that run for minutes: a small dispatch window
Submitter = Literal["member", "admin", "superadmin"]


class RetryableError(Exception):
    """A failure worth another attempt (a provider timeout, a busy resource)."""


class JobCancelled(Exception):
    """Raised by `ctx.check_cancelled()` once cancellation was requested."""


class TimeLimitExceeded(JobCancelled):
    """Raised by `ctx.check_cancelled()` once the job ran past its time limit."""


Handler = Callable[["JobContext", Any], Any]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    payload: type[BaseModel]
    queue: str = "default"
    timeout: timedelta = timedelta(minutes=30)
    max_attempts: int = 3
    # Delay before attempt n+1 is backoff * 2**(n-1), capped at max_backoff.
    backoff: timedelta = timedelta(seconds=5)
    max_backoff: timedelta = timedelta(minutes=10)
    # Who may submit this kind through `POST /jobs`; None: only its own domain's endpoints.
    submitter: Submitter | None = None
    description: str = ""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def retry_delay(self, attempt: int) -> timedelta:
        return min(self.backoff * 2 ** max(attempt - 1, 0), self.max_backoff)


PeriodicFn = Callable[["Runtime"], Awaitable[Any]]


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    fn: PeriodicFn
    every: timedelta | Callable[[Settings], timedelta]
    description: str = ""

    def interval(self, settings: Settings) -> timedelta:
        return self.every(settings) if callable(self.every) else self.every


@dataclass
class Registry:
    kinds: dict[str, JobKind] = field(default_factory=dict)
    periodic_tasks: dict[str, PeriodicTask] = field(default_factory=dict)

    def kind(
        self,
        name: str,
        *,
        payload: type[BaseModel],
        queue: str = "default",
        timeout: timedelta = timedelta(minutes=30),
        max_attempts: int = 3,
        backoff: timedelta = timedelta(seconds=5),
        submitter: Submitter | None = None,
    ) -> Callable[[Handler], Handler]:
        if queue not in QUEUES:
            raise ValueError(f"unknown queue {queue!r}; one of {', '.join(QUEUES)}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

        def register(handler: Handler) -> Handler:
            if name in self.kinds:
                raise ValueError(f"job kind {name!r} is registered twice")
            self.kinds[name] = JobKind(
                name=name,
                handler=handler,
                payload=payload,
                queue=queue,
                timeout=timeout,
                max_attempts=max_attempts,
                backoff=backoff,
                submitter=submitter,
                description=inspect.getdoc(handler) or "",
            )
            return handler

        return register

    def periodic(
        self, name: str, *, every: timedelta | Callable[[Settings], timedelta]
    ) -> Callable[[PeriodicFn], PeriodicFn]:
        def register(fn: PeriodicFn) -> PeriodicFn:
            if name in self.periodic_tasks:
                raise ValueError(f"periodic task {name!r} is registered twice")
            self.periodic_tasks[name] = PeriodicTask(name, fn, every, inspect.getdoc(fn) or "")
            return fn

        return register

    def get(self, name: str) -> JobKind | None:
        return self.kinds.get(name)


# The process-wide registry that domain `jobs.py` modules register into (like SQLAlchemy's
# declarative Base). `atelier.job_kinds.load()` imports them all.
registry = Registry()
