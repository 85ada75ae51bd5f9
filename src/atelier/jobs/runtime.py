"""Running one job: claim it, run its handler under a time limit, report, finish — exactly once.

Every executor ends in `Runtime.run(job_id)`, in whatever process it delivers to. The claim is a
conditional UPDATE (`queued → running`, attempt + 1), so a repeated delivery finds nothing to do.
Every later write is fenced by that attempt: a run whose job was re-queued under it (its
heartbeat went stale) can no longer change the row. While the handler runs (from its first
quarter second on), a heartbeat task writes progress and log lines, and reads back cancellation
requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from atelier.core.blobs import BlobStore, org_key
from atelier.core.clock import Clock
from atelier.core.db import StatementConnection, is_transient, transaction
from atelier.jobs import metrics
from atelier.jobs import statements as sql
from atelier.jobs.dispatch import Dispatcher
from atelier.jobs.models import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
    JobLogLine,
    job_problem,
)
from atelier.jobs.registry import (
    JobCancelled,
    JobKind,
    Registry,
    RetryableError,
    TimeLimitExceeded,
)
from atelier.plans import service as plans
from atelier.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_LOG_LINES = 1000
MAX_LOG_CHARS = 2000
MIN_FLUSH_INTERVAL = 0.25
QUIET_START = 0.25  # seconds a job runs before it gets a heartbeat task
END_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between the tries of a job's end


@dataclass
class Runtime:
    """What running jobs needs, built once per worker process (see `atelier.workers`)."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    clock: Clock
    dispatcher: Dispatcher
    registry: Registry
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # Ends this process after a handler ignored its time limit past the grace period (pool
    # workers); None: the stuck thread is abandoned (inline runs).
    hard_exit: Callable[[], None] | None = None
    # Called on every heartbeat, e.g. to stop a pool worker whose parent died.
    on_heartbeat: Callable[[], None] | None = None
    # One database operation at a time (inline runs sharing the caller's connection): no
    # heartbeat task, no release alongside the handler; progress is written at the end.
    serial: bool = False
    # Claims and ends: one statement each, on a connection of their own, committed without
    # waiting for the disk: a database crash that loses one leaves the job `running` with a
    # stale heartbeat or `queued` and dispatched, which the sweeper recovers (docs/jobs.md).
    statements: StatementConnection = field(init=False)

    def __post_init__(self) -> None:
        self.statements = StatementConnection(self.engine, durable=False)

    async def close(self) -> None:
        await self.dispatcher.close(executor=False)  # what this process released, published
        await self.statements.close()
        await self.engine.dispose()

    async def run(self, job_id: str) -> str | None:
        """Run the job if it can be claimed; returns its new status, or None if not claimed."""
        claim = await self._claim(job_id)
        if claim is None:
            await self._recover_if_orphaned(job_id)
            return None
        with structlog.contextvars.bound_contextvars(job_id=job_id, org_id=claim.org_id):
            return await self._run_claimed(claim)

    # ---- claim ---------------------------------------------------------------------------

    async def _claim(self, job_id: str) -> Claim | None:
        now = self.clock.now()
        params = {"p_job_id": job_id, "p_now": now, "p_worker": self.worker_name[:255]}
        row = await self._write(sql.CLAIM, params)
        if row is None:
            log.debug("job_not_claimed", job_id=job_id)
            return None
        *fields, has_waiting, handed_over = row
        claim = Claim(job_id, *fields)
        # Refill the window when it is half empty, not at every start: fewer, larger releases.
        # (`handed_over` counts this job too: the statement read the table before claiming it.)
        half_empty = handed_over - 1 <= self.dispatcher.window_of(claim.queue) // 2
        claim.release_after = bool(has_waiting) and half_empty
        # The claim read the table before it committed: a job stored waiting meanwhile, by a
        # submit that found this job still handed over (`Dispatcher.settle`), escaped it.
        # Such a submit leaves the release to this start, so look again once committed.
        claim.look_again = not has_waiting and half_empty and self.dispatcher.statements is not None
        return claim

    async def _recover_if_orphaned(self, job_id: str) -> None:
        """A delivery that finds its job running in a process of this machine that is gone (a
        killed worker process whose message came back) recovers the job now, instead of after
        the heartbeat timeout; the recovery dispatches it again."""
        async with self.sessionmaker() as session:
            row = (
                await session.execute(select(Job.status, Job.worker).where(Job.id == job_id))
            ).one_or_none()
        if row is None or row.status != RUNNING or not row.worker:
            return
        host, _, pid = row.worker.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or _process_exists(int(pid)):
            return
        lost = (Job.id == job_id) & (Job.status == RUNNING) & (Job.worker == row.worker)
        async with self.sessionmaker() as session, transaction(session):
            await self.dispatcher.recover(session, lost)
            await self.dispatcher.release(session)

    # ---- run -----------------------------------------------------------------------------

    async def _run_claimed(self, claim: Claim) -> str | None:
        # Starting freed a slot in the queue's dispatch window.
        releasing = None
        if claim.release_after or claim.look_again:
            release = self._release(claim.queue, look_first=not claim.release_after)
            if self.serial:
                await release
            else:
                releasing = asyncio.create_task(release)
        kind = self.registry.get(claim.kind)
        ctx = JobContext(self, claim, asyncio.get_running_loop())
        begin = time.monotonic()
        if kind is None:
            outcome = Outcome.fail(
                "unknown-job-kind", "Unknown job kind", f"No handler for {claim.kind!r}."
            )
        else:
            try:
                payload = kind.payload.model_validate(claim.payload)
            except ValidationError as exc:
                outcome = Outcome.fail(
                    "invalid-job-payload", "Invalid job payload", str(exc)[:MAX_LOG_CHARS]
                )
            else:
                try:
                    outcome = await self._execute(kind, ctx, payload, claim)
                finally:
                    await self._stop_heartbeat(ctx)
                if kind.is_async and (ctx.expired or ctx.cancel_requested.is_set()):
                    self._free_cancelled_statements()
        seconds = time.monotonic() - begin
        if releasing is not None:
            await releasing
        if ctx.lost:
            log.warning("job_run_lost_its_claim", attempt=claim.attempt)
            return None
        status = await self._end(ctx, kind, outcome, seconds)
        if outcome.hard_exit and self.hard_exit is not None:
            log.error("job_ignored_time_limit", kind=claim.kind, seconds=round(seconds, 1))
            self.hard_exit()
        return status

    async def _execute(
        self, kind: JobKind, ctx: JobContext, payload: BaseModel, claim: Claim
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        if kind.is_async:
            task: asyncio.Future[Any] = asyncio.ensure_future(kind.handler(ctx, payload))
        else:
            task = asyncio.ensure_future(asyncio.to_thread(kind.handler, ctx, payload))
        deadline = loop.time() + claim.timeout_seconds
        # Most jobs end within moments: only one still running after QUIET_START gets its
        # heartbeat and a cancellation waiter (no cancel request can reach it before its first
        # heartbeat reads the row).
        await asyncio.wait({task}, timeout=min(QUIET_START, claim.timeout_seconds))
        if task.done():
            return self._outcome_of(task, kind, ctx, claim)
        if not self.serial:
            ctx._heartbeat_task = asyncio.create_task(self._heartbeat(ctx))
        cancel_wait = asyncio.ensure_future(ctx.cancel_requested.wait())
        try:
            while not task.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                waiting = {task} if cancel_wait.done() else {task, cancel_wait}
                await asyncio.wait(waiting, timeout=remaining, return_when="FIRST_COMPLETED")
                if cancel_wait.done() and kind.is_async and not task.done():
                    task.cancel()
        finally:
            cancel_wait.cancel()
        if not task.done():
            # Past the time limit: ask the handler to stop, give it the grace period.
            ctx.expired = True
            if kind.is_async:
                task.cancel()
            await asyncio.wait({task}, timeout=self.settings.jobs.time_limit_grace_seconds)
            outcome = Outcome.fail(
                "job-time-limit",
                "Time limit exceeded",
                f"The job ran longer than its limit of {claim.timeout_seconds} seconds.",
                hard_exit=not task.done(),
            )
            if not task.done():
                return outcome
            with contextlib.suppress(BaseException):
                task.result()
            return outcome
        return self._outcome_of(task, kind, ctx, claim)

    def _outcome_of(
        self, task: asyncio.Future[Any], kind: JobKind, ctx: JobContext, claim: Claim
    ) -> Outcome:
        try:
            result = task.result()
        except (JobCancelled, asyncio.CancelledError) as exc:
            if ctx.expired or isinstance(exc, TimeLimitExceeded):
                return Outcome.fail(
                    "job-time-limit",
                    "Time limit exceeded",
                    f"The job ran longer than its limit of {claim.timeout_seconds} seconds.",
                )
            return Outcome(CANCELLED)
        except RetryableError as exc:
            problem = job_problem("job-error", "Job failed", _describe(exc), attempt=claim.attempt)
            if claim.attempt < claim.max_attempts:
                return Outcome(QUEUED, error=problem, retry_in=kind.retry_delay(claim.attempt))
            return Outcome(FAILED, error=problem)
        except Exception as exc:
            log.exception("job_handler_failed", kind=claim.kind)
            return Outcome(
                FAILED,
                error=job_problem(
                    "job-error", "Job failed", _describe(exc), exception=type(exc).__name__
                ),
            )
        try:
            return Outcome(SUCCEEDED, result=_jsonable(result))
        except (TypeError, ValueError) as exc:
            return Outcome.fail(
                "job-result-not-json", "Result is not JSON", f"The handler returned {exc}"
            )

    # ---- reporting -----------------------------------------------------------------------

    async def _heartbeat(self, ctx: JobContext) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.dirty.wait(), self.settings.jobs.heartbeat_seconds)
            await asyncio.sleep(MIN_FLUSH_INTERVAL)
            if self.on_heartbeat is not None:
                self.on_heartbeat()
            ctx._flushing = True  # from here to the end of the write: not to be cancelled
            reports = ctx.take_reports()
            try:
                async with self.sessionmaker() as session, transaction(session):
                    await self._flush(session, ctx, reports)
            except Exception:  # a missed heartbeat is retried; the sweeper allows for several
                ctx.give_back(reports)  # written with the next one
                log.warning("job_heartbeat_failed", exc_info=True)
            finally:
                ctx._flushing = False
            if ctx.lost:
                ctx.cancel_requested.set()
                return
            if ctx._heartbeat_stopping:
                return

    def _free_cancelled_statements(self) -> None:
        """An async handler cancelled inside a statement (its time limit, a cancel request)
        left that statement unfinished; on SQLite its discarded connection keeps the write lock
        until the garbage collector frees the statement, and the job's end would wait for it,
        then fail with "database is locked". Collect now: the run is over, its frames are
        garbage."""
        if self.engine.dialect.name == "sqlite":
            gc.collect()

    @staticmethod
    async def _stop_heartbeat(ctx: JobContext) -> None:
        """Stop the heartbeat between two writes, never in one: a task cancelled while its
        statement runs leaves, on SQLite, a discarded connection that keeps the write lock
        until the garbage collector frees the statement (seconds), and the job's end would
        wait for it, then fail with "database is locked". A write under way is awaited."""
        heartbeat = ctx._heartbeat_task
        if heartbeat is None:
            return
        ctx._heartbeat_stopping = True
        if not ctx._flushing:
            heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat

    async def _flush(self, session: AsyncSession, ctx: JobContext, reports: Reports) -> None:
        """Write progress, log lines (`reports`, taken from `ctx`) and a heartbeat; read back
        a cancellation request."""
        ctx.dirty.clear()
        fraction, message, lines = reports
        if fraction is None and not lines:
            params = {**ctx.fence_params(), "p_now": self.clock.now()}
            beat = (await session.execute(sql.HEARTBEAT, params)).one_or_none()
            if beat is None:
                ctx.lost = True
            elif beat[0] is not None:
                ctx.cancel_requested.set()
            return
        values: dict[str, Any] = {"heartbeat_at": self.clock.now()}
        if fraction is not None:
            values.update(progress=fraction, progress_message=message)
        if fraction is not None or lines:
            values["revision"] = Job.revision + 1
        row = (
            await session.execute(
                update(Job).where(*ctx.fence()).values(**values).returning(Job.cancel_requested_at)
            )
        ).one_or_none()
        if row is None:
            ctx.lost = True
            return
        if lines:
            await session.execute(
                insert(JobLogLine),
                [
                    {
                        "job_id": ctx.job_id,
                        "attempt": ctx.attempt,
                        "at": at,
                        "level": lv,
                        "message": m,
                    }
                    for at, lv, m in lines
                ],
            )
        if row[0] is not None:
            ctx.cancel_requested.set()

    # ---- finish --------------------------------------------------------------------------

    async def _end(
        self, ctx: JobContext, kind: JobKind | None, outcome: Outcome, seconds: float
    ) -> str | None:
        """Write the job's end, trying again after a transient database failure (a write lock
        held past the busy timeout, a restarted server): a blip must not cost the handler's
        work, which the sweeper would otherwise run again. Each try is fenced by the attempt
        and atomic, so one that committed but lost its reply makes the next find nothing."""
        for delay in END_RETRY_DELAYS:
            try:
                return await self._finish(ctx, kind, outcome, seconds)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("job_end_retried", kind=ctx.kind, error=repr(exc)[:300], after=delay)
            await asyncio.sleep(delay)
        return await self._finish(ctx, kind, outcome, seconds)  # the last try

    async def _finish(
        self, ctx: JobContext, kind: JobKind | None, outcome: Outcome, seconds: float
    ) -> str | None:
        now = self.clock.now()
        params = {
            **ctx.fence_params(),
            "p_now": now,
            "p_seconds": seconds,
            "p_error": outcome.error,
            "p_org": ctx.org_id,
        }
        if outcome.status == QUEUED:
            assert outcome.retry_in is not None
            statement = sql.RETRY
            params["p_not_before"] = now + outcome.retry_in
        else:
            statement = sql.FINISH
            params.update(p_status=outcome.status, p_result=outcome.result)
        metered = round(seconds)
        if metered == 0 and not ctx.has_reports():
            # Most jobs: the end is one statement; releasing waiting jobs, if it frees a slot
            # for them, follows in its own transaction (the sweeper would redo a failed one).
            done = await self._write(statement, params)
            if done is None:
                ctx.lost = True
                return None
            if done[0] or outcome.status == QUEUED:
                await self._release(None)
        else:
            reports = ctx.take_reports()
            try:
                async with self.sessionmaker() as session, transaction(session):
                    if not reports.empty:
                        await self._flush(session, ctx, reports)
                        if ctx.lost:
                            return None
                    done = (await session.execute(statement, params)).one_or_none()
                    if done is None:
                        ctx.lost = True
                        return None
                    if metered > 0:
                        await plans.record(
                            session, ctx.org_id, "compute_seconds", metered, clock=self.clock
                        )
                    # Ending freed a slot of the organization's concurrent-jobs limit (or a
                    # retry waits): release the organization's waiting jobs, if any.
                    # (PostgreSQL evaluates the EXISTS before this row changed: a retry asks
                    # itself.)
                    if done[0] or outcome.status == QUEUED:
                        await self.dispatcher.release(session)
            except BaseException:
                ctx.give_back(reports)  # for the next try
                raise
        if outcome.status == QUEUED:
            log.info("job_retry_scheduled", kind=ctx.kind, attempt=ctx.attempt)
        else:
            metrics.record_finished(ctx.kind, outcome.status, seconds)
            log.info(
                "job_finished", kind=ctx.kind, status=outcome.status, seconds=round(seconds, 3)
            )
        return outcome.status

    async def _write(self, statement: Any, params: dict[str, Any]) -> Any:
        """One write on the hot path: its returned row, or None."""
        if self.serial:  # through the caller's sessions (inline runs share their connection)
            async with self.sessionmaker() as session, transaction(session):
                return (await session.execute(statement, params)).one_or_none()
        return await self.statements.one_or_none(statement, params)

    async def _release(self, queue: str | None, *, look_first: bool = False) -> None:
        """Release waiting jobs into the queue's window; `look_first`: only if one of its jobs
        waits (one cheap statement before the queue's lock)."""
        try:
            if look_first:
                await asyncio.sleep(0)  # the handler (scheduled next) starts first
                waiting = await self._write(sql.WAITING_IN_QUEUE, {"p_queue": queue})
                if waiting is None or not waiting[0]:
                    return
            async with self.sessionmaker() as session, transaction(session):
                await self.dispatcher.release(session, queue)
        except Exception:  # the sweeper releases what this missed
            log.warning("job_release_failed", exc_info=True)


@dataclass
class Claim:
    job_id: str
    org_id: str
    kind: str
    queue: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_seconds: int
    created_by: str | None
    release_after: bool = False
    look_again: bool = False


class Reports(NamedTuple):
    """What a handler reported since the last write: its latest progress and its log lines."""

    fraction: float | None
    message: str | None
    lines: list[tuple[datetime, str, str]]

    @property
    def empty(self) -> bool:
        return self.fraction is None and not self.lines


@dataclass(frozen=True)
class Outcome:
    status: str
    result: Any = None
    error: dict[str, Any] | None = None
    retry_in: timedelta | None = None
    hard_exit: bool = False

    @classmethod
    def fail(cls, slug: str, title: str, detail: str, *, hard_exit: bool = False) -> Outcome:
        return cls(FAILED, error=job_problem(slug, title, detail), hard_exit=hard_exit)


class JobContext:
    """What a handler gets besides its payload. Safe to use from a sync handler's thread.

    `progress` and `log` only record; the runtime writes them out shortly after (coalesced),
    with the heartbeat. `cancelled` turns true once a cancel was requested or the time limit
    passed; `check_cancelled()` raises then, for handlers to call between steps.
    """

    def __init__(self, runtime: Runtime, claim: Claim, loop: asyncio.AbstractEventLoop) -> None:
        self._runtime = runtime
        self._claim = claim
        self._loop = loop
        self._lock = threading.Lock()
        self._progress: tuple[float, str | None] | None = None
        self._lines: list[tuple[datetime, str, str]] = []
        self._line_count = 0
        self.dirty = asyncio.Event()
        self.cancel_requested = asyncio.Event()
        self.expired = False
        self.lost = False
        self._heartbeat_task: asyncio.Task[None] | None = None  # the runtime's, once started
        self._flushing = False  # the heartbeat is writing
        self._heartbeat_stopping = False

    # ---- identity --------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self._claim.job_id

    @property
    def org_id(self) -> str:
        return self._claim.org_id

    @property
    def kind(self) -> str:
        return self._claim.kind

    @property
    def attempt(self) -> int:
        return self._claim.attempt

    @property
    def created_by(self) -> str | None:
        return self._claim.created_by

    @property
    def blobs(self) -> BlobStore:
        return self._runtime.blobs

    @property
    def clock(self) -> Clock:
        return self._runtime.clock

    @property
    def settings(self) -> Settings:
        return self._runtime.settings

    def session(self) -> AsyncSession:
        """A new database session (`async with ctx.session() as s:`), for async handlers."""
        return self._runtime.sessionmaker()

    def output_key(self, *parts: str) -> str:
        """A storage key for this job's output; the same on every attempt (idempotent writes).

        Record what is written there as a stored blob (`storage.service`) before the job ends:
        the garbage collector deletes objects that stay without a row past its grace period.
        """
        return org_key(self.org_id, "jobs", self.job_id, *parts)

    def fence(self) -> tuple[Any, ...]:
        return (Job.id == self.job_id, Job.attempt == self.attempt, Job.status == RUNNING)

    def fence_params(self) -> dict[str, Any]:
        return {"p_job_id": self.job_id, "p_attempt": self.attempt}

    # ---- reporting -------------------------------------------------------------------------

    def progress(self, fraction: float, message: str | None = None) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        with self._lock:
            self._progress = (fraction, message[:500] if message else None)
        self._wake()

    def log(self, message: str, *, level: str = "info") -> None:
        with self._lock:
            if self._line_count >= MAX_LOG_LINES:
                return
            self._line_count += 1
            if self._line_count == MAX_LOG_LINES:
                message, level = f"(log limit of {MAX_LOG_LINES} lines reached)", "warning"
            self._lines.append((self._runtime.clock.now(), level[:8], message[:MAX_LOG_CHARS]))
        self._wake()

    def has_reports(self) -> bool:
        with self._lock:
            return self._progress is not None or bool(self._lines)

    def take_reports(self) -> Reports:
        """The progress and log lines reported since the last take, to be written."""
        with self._lock:
            progress, self._progress = self._progress, None
            lines, self._lines = self._lines, []
        fraction, message = progress if progress else (None, None)
        return Reports(fraction, message, lines)

    def give_back(self, reports: Reports) -> None:
        """Reports whose write failed: written with the next, in their order (a newer
        progress wins)."""
        with self._lock:
            if self._progress is None and reports.fraction is not None:
                self._progress = (reports.fraction, reports.message)
            self._lines[:0] = reports.lines

    def _wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self.dirty.set()
        else:
            self._loop.call_soon_threadsafe(self.dirty.set)

    # ---- cancellation ----------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self.expired or self.lost or self.cancel_requested.is_set()

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` (or `TimeLimitExceeded`) if the job should stop now."""
        if self.expired:
            raise TimeLimitExceeded("time limit exceeded")
        if self.lost or self.cancel_requested.is_set():
            raise JobCancelled("cancelled")

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the worker's event loop from a sync handler, and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:MAX_LOG_CHARS]


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    json.dumps(result, allow_nan=False)
    return result
