"""The composition root of job-running processes: a `Runtime` from settings and an executor.

`create_app` (the API), the local pool's workers, Celery's worker processes and the CLI all
build their runtime here, so each sees the same database, blob store and job kinds.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from atelier import job_kinds
from atelier.adapters.blobs import create_blob_store
from atelier.core.blobs import BlobStore
from atelier.core.clock import Clock, SystemClock
from atelier.core.db import create_engine, create_sessionmaker
from atelier.jobs.dispatch import Dispatcher
from atelier.jobs.executor import Executor
from atelier.jobs.registry import HEAVY_QUEUES
from atelier.jobs.runtime import Runtime
from atelier.settings import Settings


def build_runtime(
    settings: Settings,
    executor: Executor,
    *,
    engine: AsyncEngine | None = None,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    blobs: BlobStore | None = None,
    clock: Clock | None = None,
    hard_exit: Callable[[], None] | None = None,
    on_heartbeat: Callable[[], None] | None = None,
) -> Runtime:
    """A runtime for this process; pass the parts the caller already has (the API's engine)."""
    engine = engine or create_engine(**settings.database.model_dump())
    sessionmaker = sessionmaker or create_sessionmaker(engine)
    clock = clock or SystemClock()
    blobs = blobs or create_blob_store(
        settings.storage, secret=settings.secret_key.get_secret_value(), clock=clock
    )
    dispatcher = Dispatcher(
        sessionmaker,
        executor,
        clock=clock,
        window=settings.jobs.dispatch_window,
        windows=dict.fromkeys(HEAVY_QUEUES, settings.jobs.dispatch_window_heavy),
        engine=engine,
    )
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        blobs=blobs,
        clock=clock,
        dispatcher=dispatcher,
        registry=job_kinds.load(settings.jobs.modules),
        hard_exit=hard_exit,
        on_heartbeat=on_heartbeat,
        serial=settings.jobs.executor == "inline",
    )
    if hasattr(executor, "runtime"):
        executor.runtime = runtime  # inline runs and the local pool's re-queueing need it
    return runtime
