"""The embedded executor: a pool of worker processes owned by `atelier up`.

Each worker is a process started through `forkserver` (never `fork`: OpenMP libraries such as
LightGBM hang in a forked child), with a pipe of its own. The parent keeps the list of jobs to
run and hands one job at a time to an idle worker, so a worker that dies (kill -9, a handler
that ignored its time limit) costs only its own job, which the parent re-queues at once; the
process is then replaced. Workers exit when the parent goes away.

Pipe messages: parent → worker `("run", job_id)` / `("stop",)`; worker → parent
`("done", job_id)` / `("deliver", [Delivery, ...])` (jobs its finish released).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import structlog

from atelier.core.db import transaction
from atelier.jobs.executor import Delivery
from atelier.jobs.models import RUNNING, Job
from atelier.jobs.runtime import Runtime
from atelier.settings import Settings

log = structlog.get_logger(__name__)

SUPERVISE_SECONDS = 0.5
HARD_EXIT_CODE = 70


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    job_id: str | None = None

    @property
    def name(self) -> str:
        return f"local-{self.process.pid}"


class LocalExecutor:
    background = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.concurrency = settings.jobs.concurrency
        self.runtime: Runtime | None = None  # the parent's, for re-queueing lost jobs
        self._context = multiprocessing.get_context("forkserver")
        self._workers: list[_Worker] = []
        self._pending: deque[str] = deque()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._context.set_forkserver_preload(["atelier.adapters.executors.local"])
        for _ in range(self.concurrency):
            self._spawn()
        self._supervisor = asyncio.create_task(self._supervise())
        log.info("local_pool_started", workers=self.concurrency)

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=worker_main,
            args=(self.settings, child_conn),
            name="atelier-job-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn)
        self._workers.append(worker)
        asyncio.get_running_loop().add_reader(parent_conn.fileno(), self._on_message, worker)
        return worker

    async def close(self) -> None:
        self._closing = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            loop.remove_reader(worker.conn.fileno())
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
        for worker in self._workers:
            await asyncio.to_thread(worker.process.join, 5)
            if worker.process.is_alive():
                worker.process.kill()
            worker.conn.close()
        self._workers.clear()

    # ---- delivering ----------------------------------------------------------------------

    async def deliver(self, deliveries: list[Delivery]) -> None:
        if self._closing or not self._workers:
            raise RuntimeError("the local pool is not running")
        self._pending.extend(d.job_id for d in deliveries)
        self._assign()

    async def ping(self) -> str:
        alive = sum(w.process.is_alive() for w in self._workers)
        if alive == 0:
            raise RuntimeError("no local worker process is alive")
        busy = sum(w.job_id is not None for w in self._workers)
        return f"local pool: {alive} workers, {busy} busy, {len(self._pending)} waiting"

    def _assign(self) -> None:
        for worker in self._workers:
            if not self._pending:
                return
            if worker.job_id is None and worker.process.is_alive():
                job_id = self._pending.popleft()
                try:
                    worker.conn.send(("run", job_id))
                except OSError:
                    self._pending.appendleft(job_id)
                    continue
                worker.job_id = job_id

    def _on_message(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            return
        if message[0] == "done":
            worker.job_id = None
        elif message[0] == "deliver":
            self._pending.extend(d.job_id for d in message[1])
        self._assign()

    # ---- supervision ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            for worker in list(self._workers):
                if worker.process.is_alive():
                    continue
                self._workers.remove(worker)
                with contextlib.suppress(ValueError, OSError):
                    asyncio.get_running_loop().remove_reader(worker.conn.fileno())
                worker.conn.close()
                log.warning(
                    "local_worker_died",
                    pid=worker.process.pid,
                    exitcode=worker.process.exitcode,
                    job_id=worker.job_id,
                )
                if worker.job_id is not None:
                    await self._requeue_lost(worker)
                if not self._closing:
                    self._spawn()
            self._assign()

    async def _requeue_lost(self, worker: _Worker) -> None:
        """The dead worker's job, if still running there, goes back to the queue now."""
        if self.runtime is None:
            return
        dispatcher = self.runtime.dispatcher
        lost = (
            (Job.id == worker.job_id)
            & (Job.status == RUNNING)
            & Job.worker.like(f"%:{worker.process.pid}")
        )
        try:
            async with dispatcher.sessionmaker() as session, transaction(session):
                await dispatcher.recover(session, lost)
                await dispatcher.release(session)
        except Exception:  # the sweeper re-queues it once its heartbeat is stale
            log.exception("local_requeue_failed", job_id=worker.job_id)


# ---- inside a worker process -----------------------------------------------------------------


def worker_main(settings: Settings, conn: Connection) -> None:
    """A worker process: run the jobs the parent sends, one at a time, until told to stop."""
    from atelier.core import logging as core_logging
    from atelier.core import metrics
    from atelier.workers import build_runtime

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    core_logging.configure(level=settings.logging.level, fmt=settings.log_format)
    stopping = False

    def orphaned() -> None:
        """On each heartbeat: a closed pipe means the parent died; the job is redone at its
        restart, so this run stops now rather than write a result nobody waits for."""
        nonlocal stopping
        try:
            if conn.poll():
                stopping = conn.recv()[0] == "stop" or stopping
        except (EOFError, OSError):
            os._exit(1)

    def hard_exit() -> None:
        os._exit(HARD_EXIT_CODE)

    relay = _ParentRelay(conn)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = build_runtime(settings, relay, hard_exit=hard_exit, on_heartbeat=orphaned)
    try:
        while not stopping:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if message[0] == "stop":
                return
            job_id = message[1]
            try:
                loop.run_until_complete(runtime.run(job_id))
            except Exception:
                log.exception("local_job_crashed", job_id=job_id)
            conn.send(("done", job_id))
    finally:
        loop.run_until_complete(runtime.close())
        loop.close()
        metrics.mark_process_dead()


class _ParentRelay:
    """A worker's executor: jobs its runs release are sent to the parent to hand out."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def deliver(self, deliveries: list[Delivery]) -> None:
        self.conn.send(("deliver", deliveries))

    async def ping(self) -> str:
        return "local pool worker"

    async def close(self) -> None:
        return None
