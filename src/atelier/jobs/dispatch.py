"""Fair, tenant-aware dispatch: which queued jobs are handed to the executor, and when.

A queued job is handed over ("dispatched") only when both hold:
- its organization runs fewer dispatched jobs than its plan's `max_concurrent_jobs`;
- its queue has fewer than its window (`dispatch_window`, `dispatch_window_heavy`) of jobs
  handed over but not started yet.
Waiting jobs are released as slots free up (a job starts or ends, or the sweeper runs): the
organization with the fewest jobs in flight goes first, then the higher plan priority, then the
oldest job, so a tenant flooding a queue cannot starve the others.

Deliveries are published only after the transaction that dispatched them commits. A delivery that
fails puts the job back to waiting; one lost later (a broker crash) is repeated by the sweeper.
With a broker (`Executor.background`), publishing does not hold up the committer: deliveries are
posted to the executor's publisher thread, which sends what was posted while it was busy
together, and reports back what it could not send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from atelier.core.clock import Clock
from atelier.core.db import StatementConnection, on_commit, transaction
from atelier.jobs import metrics
from atelier.jobs import statements as sql
from atelier.jobs.executor import Delivery, Executor
from atelier.jobs.models import CANCELLED, FAILED, QUEUED, RUNNING, Job, job_problem

log = structlog.get_logger(__name__)

WAITING, IN_FLIGHT, HANDED_OVER = sql.WAITING, sql.IN_FLIGHT, sql.HANDED_OVER


@dataclass(frozen=True)
class Admission:
    """What deciding on a new job needs, read in one query."""

    plan_name: str
    max_concurrent: int | None
    max_waiting: int | None
    monthly_compute_seconds: int | None
    compute_used: int
    org_in_flight: int
    queue_handed_over: int
    queue_has_waiting: bool


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        executor: Executor,
        *,
        clock: Clock,
        window: int,
        windows: Mapping[str, int] | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.executor = executor
        self.clock = clock
        self.window = window  # per queue, unless `windows` names the queue
        self.windows = dict(windows or {})
        self.background = getattr(executor, "background", False)
        # Queues whose last submit here had to wait: the next one goes straight to the waiting
        # insert (PostgreSQL, a submit on its own) or takes the lock at once.
        self.contended: set[str] = set()
        # Submits made outside any unit of work insert in one autocommit round trip, on a
        # connection of their own (PostgreSQL; durable: a job that got its 202 is on disk).
        self.statements = (
            StatementConnection(engine)
            if engine is not None and engine.dialect.name == "postgresql"
            else None
        )

    # ---- counting ------------------------------------------------------------------------

    def window_of(self, queue: str) -> int:
        """How many of the queue's jobs may be handed over but not started."""
        return self.windows.get(queue, self.window)

    async def admission(
        self, session: AsyncSession, org_id: str, queue: str, period: str
    ) -> Admission | None:
        """The organization's plan and load, and its queue's; None if no such organization."""
        params = {"p_org": org_id, "p_queue": queue, "p_period": period}
        # On the session's connection: the same transaction, without the ORM's per-call work.
        connection = await session.connection()
        row = (await connection.execute(sql.ADMISSION, params)).one_or_none()
        return None if row is None else Admission(*row[:-1], bool(row[-1]))

    async def org_waiting(self, session: AsyncSession, org_id: str, cap: int) -> int:
        """The organization's waiting jobs, counted up to its plan's cap (`cap` if it has none)."""
        connection = await session.connection()
        return await connection.scalar(sql.ORG_WAITING, {"p_org": org_id, "p_cap": cap}) or 0

    async def lock_queue(self, session: AsyncSession, queue: str) -> bool:
        """Serialize dispatch decisions in one queue: False where there is no need (SQLite has
        one writer at a time, and a unit of work begins as the writer)."""
        if session.get_bind().dialect.name != "postgresql":
            return False
        connection = await session.connection()
        await connection.execute(sql.LOCK, {"key": f"atelier.jobs:{queue}"})
        return True

    # ---- dispatching ---------------------------------------------------------------------

    async def settle(self, queue: str) -> None:
        """After a job was committed waiting without the queue's lock (PostgreSQL): release
        waiting jobs if nothing is handed over in the queue. Otherwise the workers release them
        as they start those jobs (a start that leaves half the window or less refills it, in one
        batch; `statements.WINDOW_USED` tells why no waiting job can be missed). A flooding
        submitter so does one cheap statement more per job and leaves the releases, under the
        queue's lock, to the workers: measured, that cut its CPU per job by about 40 %, and
        the workers' batches grew from about 6.5 jobs a message to 8."""
        assert self.statements is not None
        used = await self.statements.one_or_none(sql.WINDOW_USED, {"p_queue": queue})
        if used is not None and used[0] > 0:
            return
        self.contended.discard(queue)
        try:
            async with self.sessionmaker() as session, transaction(session):
                await self.release(session, queue)
        except Exception:  # the job is stored: the sweeper releases it
            log.warning("jobs_release_failed", queue=queue, exc_info=True)

    def hand_over(self, session: AsyncSession, deliveries: list[Delivery]) -> None:
        """Publish these deliveries once the current transaction commits."""
        if deliveries:
            on_commit(session, self.post if self.background else self.publish, deliveries)

    async def handed_over(self, deliveries: list[Delivery]) -> None:
        """Publish deliveries whose dispatch is already committed."""
        if self.background:
            self.post(deliveries)
        else:
            await self.publish(deliveries)

    def post(self, deliveries: list[Delivery]) -> None:
        """Give deliveries to the executor's publisher, without waiting for the broker."""
        self.executor.post(deliveries, self._not_handed_over)  # type: ignore[attr-defined]

    async def _not_handed_over(self, deliveries: list[Delivery], exc: BaseException) -> None:
        log.warning(
            "jobs_not_handed_over",
            jobs=[d.job_id for d in deliveries],
            error=repr(exc) or type(exc).__name__,
        )
        await self._undispatch([d.job_id for d in deliveries])

    async def flush(self) -> None:
        """Wait until what was posted is published (or given back to the sweeper)."""
        if self.background:
            await self.executor.flush()  # type: ignore[attr-defined]

    async def close(self, *, executor: bool = True) -> None:
        """Publish what was posted, release the connection; close the executor unless told
        not to (a worker's runtime closes, its executor belongs to the worker)."""
        await self.flush()
        if self.statements is not None:
            await self.statements.close()
        if executor:
            await self.executor.close()

    async def publish(self, deliveries: list[Delivery]) -> None:
        try:
            await self.executor.deliver(deliveries)
        except Exception as exc:  # a broker down or slow: the jobs wait for the next sweep
            log.warning(
                "jobs_not_handed_over",
                jobs=[d.job_id for d in deliveries],
                error=repr(exc) or type(exc).__name__,
            )
            await self._undispatch([d.job_id for d in deliveries])

    async def _undispatch(self, job_ids: list[str]) -> None:
        try:
            async with self.sessionmaker() as session, transaction(session):
                await session.execute(
                    update(Job)
                    .where(Job.id.in_(job_ids), Job.status == QUEUED)
                    .values(dispatched_at=None)
                )
        except Exception:  # the sweeper's re-dispatch timer still covers these jobs
            log.exception("jobs_undispatch_failed", jobs=job_ids)

    async def release(self, session: AsyncSession, queue: str | None = None) -> list[Delivery]:
        """Dispatch waiting jobs into free slots, fairly; call inside a transaction.

        Returns what was dispatched (already scheduled for publication after commit).
        """
        now = self.clock.now()
        due = or_(Job.not_before.is_(None), Job.not_before <= now)
        if queue is None:
            queues = list(await session.scalars(select(Job.queue).where(WAITING, due).distinct()))
        else:
            queues = [queue]
        released: list[Delivery] = []
        for name in queues:
            released += await self._release_queue(session, name, now)
        self.hand_over(session, released)
        return released

    async def _release_queue(
        self, session: AsyncSession, queue: str, now: datetime
    ) -> list[Delivery]:
        await self.lock_queue(session, queue)
        connection = await session.connection()
        handed_over = await connection.scalar(sql.HANDED_OVER_IN_QUEUE, {"p_queue": queue})
        free = self.window_of(queue) - (handed_over or 0)
        if free <= 0:
            return []
        params = {"p_queue": queue, "p_now": now, "p_free": free}
        postgresql = connection.dialect.name == "postgresql"
        rows = await connection.execute(sql.RELEASE_PG if postgresql else sql.RELEASE, params)
        return [Delivery(*row) for row in rows.all()]

    # ---- the sweeper ---------------------------------------------------------------------

    async def sweep(self, *, stale_after: timedelta, redispatch_after: timedelta) -> dict[str, int]:
        """The safety net: recover lost runs and lost deliveries, release waiting jobs."""
        now = self.clock.now()
        async with self.sessionmaker() as session, transaction(session):
            requeued, failed = await self._recover_stale(session, now - stale_after)
            redelivered = await self._redeliver(session, now, now - redispatch_after)
            released = await self.release(session)
        counts = {
            "requeued": requeued,
            "failed": failed,
            "redelivered": len(redelivered),
            "released": len(released),
        }
        if any(counts.values()):
            log.info("jobs_swept", **counts)
        return counts

    async def _recover_stale(self, session: AsyncSession, cutoff: datetime) -> tuple[int, int]:
        running = sql.status_in(Job.status, RUNNING)
        return await self.recover(session, and_(running, Job.heartbeat_at < cutoff))

    async def recover(self, session: AsyncSession, lost) -> tuple[int, int]:
        """Jobs whose run was lost (`lost`: a condition on running jobs): queued again if they
        have attempts left, else failed; cancelled if a cancel was requested."""
        requeued = await session.execute(
            update(Job)
            .where(lost, Job.attempt < Job.max_attempts, Job.cancel_requested_at.is_(None))
            .values(status=QUEUED, dispatched_at=None, worker=None, revision=Job.revision + 1)
            .returning(Job.id)
        )
        requeued_ids = list(requeued.scalars())
        cancelled = await session.execute(
            update(Job)
            .where(lost, Job.cancel_requested_at.is_not(None))
            .values(status=CANCELLED, finished_at=self.clock.now(), revision=Job.revision + 1)
            .returning(Job.kind)
        )
        for kind in cancelled.scalars():
            metrics.record_finished(kind, CANCELLED, None)
        failed = await session.execute(
            update(Job)
            .where(lost)
            .values(
                status=FAILED,
                finished_at=self.clock.now(),
                error=worker_lost_problem(),
                revision=Job.revision + 1,
            )
            .returning(Job.kind)
        )
        failed_kinds = list(failed.scalars())
        for kind in failed_kinds:
            metrics.record_finished(kind, FAILED, None)
        if requeued_ids:
            log.warning("jobs_requeued_after_lost_run", jobs=requeued_ids)
        return len(requeued_ids), len(failed_kinds)

    async def recover_after_restart(self) -> dict[str, int]:
        """For the only executor over this database (`atelier up`'s pool), at its start: every
        run and every delivery belonged to the previous process, so all are redone."""
        async with self.sessionmaker() as session, transaction(session):
            requeued, failed = await self.recover(session, sql.status_in(Job.status, RUNNING))
            undelivered = await session.execute(
                update(Job).where(HANDED_OVER).values(dispatched_at=None).returning(Job.id)
            )
            redelivered = len(undelivered.all())
            released = await self.release(session)
        counts = {
            "requeued": requeued,
            "failed": failed,
            "redelivered": redelivered,
            "released": len(released),
        }
        log.info("jobs_recovered_at_start", **counts)
        return counts

    async def _redeliver(
        self, session: AsyncSession, now: datetime, cutoff: datetime
    ) -> list[Delivery]:
        rows = await session.execute(
            update(Job)
            .where(HANDED_OVER, Job.dispatched_at < cutoff)
            .values(dispatched_at=now)
            .returning(Job.id, Job.queue, Job.timeout_seconds)
        )
        deliveries = [Delivery(*row) for row in rows.all()]
        self.hand_over(session, deliveries)
        return deliveries


def worker_lost_problem() -> dict:
    return job_problem(
        "worker-lost",
        "Worker lost",
        "The job's worker stopped answering on its last allowed attempt.",
    )
