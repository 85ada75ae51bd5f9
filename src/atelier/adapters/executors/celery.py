"""Celery as the executor: `atelier worker` processes fed through Redis or RabbitMQ.

Celery only carries "run job X"; the job row stays the source of truth (`jobs.runtime`):
- `acks_late` with `reject_on_worker_lost`: a worker process killed mid-job returns its message
  to the queue, and the run is redone once the job's lost run is recovered (at once when the
  dead process was on this machine, else by the sweeper when its heartbeat goes stale).
- Publishing has a short timeout and no retries; a job not handed over stays stored and the
  sweeper dispatches it when the broker is back.
- Time limits: the runtime enforces each job's own limit; Celery's hard `time_limit` (the job's
  limit plus the grace period and a margin) is the backstop that ends a stuck process.
- Retries with exponential backoff are the runtime's (`RetryableError`), not Celery's.
- Logging is Atelier's, in the main process and in each pool process: Celery neither configures
  it (a `setup_logging` receiver) nor redirects stdout and stderr to its logger, which in a pool
  process would have swallowed every job event (the handler's stream would have been Celery's
  proxy, which drops what comes back to it). `--loglevel` sets only Celery's own loggers.
- One message carries up to `BATCH` jobs of one queue (jobs released or submitted together), so
  a busy system pays Celery's per-message work once per batch, not once per job. The worker
  process runs them one after the other; a job still running after `HAND_BACK_AFTER`, or a batch
  after `BATCH_SECONDS`, gives the rest back to the queue, so long jobs never hold others while a
  process idles (the batch's budget is generous: under load, when batches form, handing back
  only adds messages).
  A batch redelivered after its process died is harmless: its jobs that already ran cannot be
  claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown
from kombu import Queue
from kombu.utils.url import maybe_sanitize_url

from atelier.adapters.executors import redis_transport
from atelier.jobs.executor import Delivery
from atelier.jobs.registry import QUEUES
from atelier.settings import Settings

log = structlog.get_logger(__name__)

RUN_JOB = "atelier.run_job"  # one job: messages published before batches existed
RUN_JOBS = "atelier.run_jobs"
PERIODIC = "atelier.periodic"
HARD_LIMIT_MARGIN = 30
BATCH = 16
HAND_BACK_AFTER = 0.05  # seconds one job may run before the rest of its batch is handed back
BATCH_SECONDS = 0.25  # seconds a whole batch may run before the rest is handed back
ARGSREPR_MAX = 1024  # Celery's own bound on a task's arguments in its logs


def make_celery(settings: Settings) -> Celery:
    """The Celery app of `atelier worker` and `atelier scheduler`, with Atelier's two tasks."""
    app = _base_app(settings)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        enable_utc=True,
        beat_schedule=_beat_schedule(settings),
    )
    state = _WorkerState(settings, app)

    @app.task(name=RUN_JOBS, ignore_result=True)
    def run_jobs(queue: str, jobs: list[tuple[str, int]]) -> None:
        state.run(state.run_batch([Delivery(job_id, queue, limit) for job_id, limit in jobs]))

    @app.task(name=RUN_JOB, ignore_result=True)
    def run_job(job_id: str) -> None:
        state.run(state.runtime().run(job_id))

    @app.task(name=PERIODIC, ignore_result=True)
    def periodic(name: str) -> None:
        runtime = state.runtime()
        task = runtime.registry.periodic_tasks.get(name)
        if task is None:
            log.error("unknown_periodic_task", name=name)
            return
        state.run(task.fn(runtime))

    setup_logging.connect(state.setup_logging, weak=False)
    worker_process_init.connect(state.start, weak=False)
    worker_process_shutdown.connect(state.stop, weak=False)
    app.atelier_state = state  # type: ignore[attr-defined]
    return app


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    from atelier import job_kinds

    registry = job_kinds.load(settings.jobs.modules)
    schedule = {}
    for name, task in registry.periodic_tasks.items():
        seconds = task.interval(settings).total_seconds()
        schedule[name] = {
            "task": PERIODIC,
            "schedule": seconds,
            "args": [name],
            # A tick nobody ran in time is skipped, not piled up.
            "options": {"queue": "default", "expires": max(seconds, 1.0)},
        }
    return schedule


class _WorkerState:
    """Per worker process: an event loop and a runtime, made after the fork."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtime = None

    def setup_logging(self, loglevel: int | str | None = None, **_: Any) -> None:
        """In place of Celery's logging setup (worker and beat): Atelier's, with the worker's
        `--loglevel` for Celery's own loggers."""
        self.configure_logging()
        if loglevel:
            logging.getLogger("celery").setLevel(loglevel)

    def configure_logging(self) -> None:
        from atelier.core import logging as core_logging

        core_logging.configure(level=self.settings.logging.level, fmt=self.settings.log_format)

    def start(self, **_: Any) -> None:
        # A pool process inherits the main process's handlers; configured again all the same,
        # on this process's own stderr.
        self.configure_logging()
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

    def runtime(self):
        if self._runtime is None:
            from atelier.workers import build_runtime

            if self._loop is None:  # a solo pool or a test: no fork happened
                self.start()
            executor = CeleryExecutor(self.settings, app=self.app)
            self._runtime = build_runtime(
                self.settings, executor, hard_exit=_hard_exit, on_heartbeat=None
            )
        return self._runtime

    def run(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(coroutine)

    async def run_batch(self, batch: list[Delivery]) -> None:
        """Run the batch's jobs in turn; hand the rest back once one of them, or the batch, has
        taken long."""
        runtime = self.runtime()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BATCH_SECONDS
        while batch:
            job, batch = batch[0], batch[1:]
            run = asyncio.ensure_future(runtime.run(job.job_id))
            if batch:
                left = max(deadline - loop.time(), 0)
                await asyncio.wait({run}, timeout=min(HAND_BACK_AFTER, left))
                if not run.done() or loop.time() >= deadline:
                    batch = await self._hand_back(runtime, batch)
            try:
                await run
            except Exception:  # this job's delivery is lost (the sweeper repeats it), not the rest
                log.exception("job_run_failed", job_id=job.job_id)

    @staticmethod
    async def _hand_back(runtime: Any, batch: list[Delivery]) -> list[Delivery]:
        """Publish the rest of a batch again; what could not be published stays here."""
        try:
            await runtime.dispatcher.executor.deliver(batch)
        except Exception:
            log.warning("job_batch_not_handed_back", jobs=[d.job_id for d in batch])
            return batch
        return []

    def stop(self, **_: Any) -> None:
        from atelier.core import metrics

        if self._loop is not None and self._runtime is not None:
            self._loop.run_until_complete(self._runtime.close())
        metrics.mark_process_dead()


def serve_metrics(port: int, host: str) -> None:
    """Serve the job metrics of this worker's processes (merged from their shared files) on
    `port`, from a thread of the worker's main process."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)


def _hard_exit() -> None:
    import os

    os._exit(70)


class CeleryExecutor:
    """Publishes deliveries as `atelier.run_jobs` tasks, up to `BATCH` jobs of one queue each."""

    background = True

    def __init__(self, settings: Settings, *, app: Celery | None) -> None:
        self.settings = settings
        self.app = app or _base_app(settings)
        self.timeout = settings.jobs.publish_timeout_seconds
        self.grace = settings.jobs.time_limit_grace_seconds
        self._posted: queue.SimpleQueue[_Posted | threading.Event | None] = queue.SimpleQueue()
        self._publisher: threading.Thread | None = None
        self._publisher_lock = threading.Lock()
        # On Redis, a message sent to the default exchange goes straight into its queue's list
        # (kombu's `_put`): declaring the queue on every publish, as Celery does, only costs.
        # A broker speaking AMQP drops a message for a queue not declared yet: declared there.
        self._declare: dict[str, Any] = {"declare": []} if _plain_redis(settings.broker_url) else {}

    async def deliver(self, deliveries: list[Delivery]) -> None:
        await asyncio.wait_for(asyncio.to_thread(self._send, deliveries), self.timeout)

    def post(self, deliveries: list[Delivery], on_failure: OnFailure) -> None:
        """Publish from the publisher thread; the caller goes on at once. What is posted while
        the thread sends leaves in its next send, together."""
        self._posted.put(_Posted(deliveries, asyncio.get_running_loop(), on_failure))
        if self._publisher is None:
            with self._publisher_lock:
                if self._publisher is None:
                    self._publisher = threading.Thread(
                        target=self._publish_posted, name="atelier-publisher", daemon=True
                    )
                    self._publisher.start()

    async def flush(self) -> None:
        if self._publisher is None:
            return
        done = threading.Event()
        self._posted.put(done)
        await asyncio.to_thread(done.wait, self.timeout + 10)

    def _publish_posted(self) -> None:
        while True:
            items = [self._posted.get()]
            while not self._posted.empty():
                items.append(self._posted.get_nowait())
            posts = [item for item in items if isinstance(item, _Posted)]
            if posts:
                try:
                    self._send([d for post in posts for d in post.deliveries])
                except Exception as exc:  # a broker down or slow: the sweeper dispatches later
                    for post in posts:
                        post.failed(exc)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is None for item in items):
                return

    def _send(self, deliveries: list[Delivery]) -> None:
        by_queue: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).append(delivery)
        with self.app.producer_or_acquire() as producer:
            for queue, jobs in by_queue.items():
                for start in range(0, len(jobs), BATCH):
                    batch = jobs[start : start + BATCH]
                    # The backstop for the whole batch: its longest job's limit, plus the time
                    # the others may take before one of them hands the rest back.
                    longest = max(d.timeout_seconds for d in batch)
                    args = [queue, [[d.job_id, d.timeout_seconds] for d in batch]]
                    self.app.send_task(
                        RUN_JOBS,
                        args=args,
                        queue=queue,
                        time_limit=longest + self.grace + HARD_LIMIT_MARGIN + len(batch),
                        producer=producer,
                        retry=False,
                        # What Celery would otherwise make per message: the arguments' repr
                        # for logs (its `saferepr` streams them, a plain repr is enough for
                        # ids and numbers), and the queue's declaration.
                        argsrepr=repr(args)[:ARGSREPR_MAX],
                        kwargsrepr="{}",
                        **self._declare,
                    )

    async def ping(self) -> str:
        def check() -> None:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=self.timeout)

        await asyncio.wait_for(asyncio.to_thread(check), self.timeout + 1)
        # The URL as configured, password hidden (kombu's `as_uri` would name the transport
        # class where the scheme was).
        return f"celery broker {maybe_sanitize_url(self.app.conf.broker_url)}"

    async def close(self) -> None:
        await self.flush()
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        if self._publisher is not None:
            self._posted.put(None)
            self._publisher.join(self.timeout + 10)
            self._publisher = None
        self.app.close()


OnFailure = Callable[[list[Delivery], BaseException], Awaitable[None]]


@dataclass(frozen=True)
class _Posted:
    deliveries: list[Delivery]
    loop: asyncio.AbstractEventLoop
    on_failure: OnFailure

    def failed(self, exc: BaseException) -> None:
        """Report the failure on the poster's loop (from the publisher thread)."""
        try:
            asyncio.run_coroutine_threadsafe(self.on_failure(self.deliveries, exc), self.loop)
        except RuntimeError:  # that loop is closed: the sweeper re-dispatches these jobs
            log.warning("jobs_not_handed_over", jobs=[d.job_id for d in self.deliveries])


def _base_app(settings: Settings) -> Celery:
    """Configuration shared by publishers (the API, the CLI) and workers."""
    app = Celery("atelier", broker=settings.broker_url, set_as_current=False)
    timeout = settings.jobs.publish_timeout_seconds
    options: dict[str, Any] = {"max_retries": 0}
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://")):
        options |= {
            "socket_connect_timeout": timeout,
            "socket_timeout": max(timeout, 5.0),
            # Unacknowledged messages of a worker that vanished come back after this long; the
            # sweeper usually recovers the job well before.
            "visibility_timeout": 3600,
        }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_queues=[Queue(name) for name in QUEUES],
        broker_connection_timeout=timeout,
        broker_transport_options=options,
        task_send_sent_event=False,
    )
    if _plain_redis(settings.broker_url):
        app.conf.broker_transport = redis_transport.NAME
    return app


def _plain_redis(url: str | None) -> bool:
    return url is not None and url.startswith("redis://")
