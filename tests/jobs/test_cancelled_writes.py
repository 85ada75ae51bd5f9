"""A job's end never waits on a write lock its own run left behind.

On SQLite, a task cancelled while its statement runs leaves that statement unfinished: SQLAlchemy
discards the connection, but SQLite keeps it, and its write lock, until the garbage collector
frees the statement. A heartbeat cancelled in the middle of its write, as the handler returned,
then held the lock for seconds, and the job's end failed with "database is locked" (the sweeper
ran the job again). The heartbeat must stop between two writes, never in one; and what an async
handler cancelled at its time limit left must be freed before the job's end is written.
"""

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from pydantic import BaseModel
from sqlalchemy import event, select, text

from atelier.core.db import create_engine, create_sessionmaker
from atelier.jobs import service
from atelier.jobs.models import Job
from atelier.jobs.registry import registry
from atelier.jobs.runtime import JobContext
from atelier.ops import migrations
from atelier.workers import build_runtime
from tests.jobs.test_dispatch import Recorder, org_on

pytestmark = pytest.mark.backend_independent

# Set by the database once a progress write is under way (held there for PAUSE seconds).
progress_writing = threading.Event()
PAUSE = 0.6


class Nothing(BaseModel):
    pass


@registry.kind("test.ends_during_a_heartbeat", payload=Nothing, max_attempts=1)
def ends_during_a_heartbeat(ctx: JobContext, payload: Nothing) -> dict:
    ctx.progress(0.5, "half way")  # the heartbeat writes this out shortly
    if not progress_writing.wait(10):
        raise AssertionError("the heartbeat never wrote the progress")
    return {"ok": True}  # while the heartbeat's statement still runs


@registry.kind(
    "test.cancelled_inside_a_statement",
    payload=Nothing,
    max_attempts=1,
    timeout=timedelta(seconds=1),
)
async def cancelled_inside_a_statement(ctx: JobContext, payload: Nothing) -> dict:
    await asyncio.sleep(0.7)  # the time limit (1 s) falls inside the next statement
    async with ctx.session() as session:
        # RETURNING: a statement cancelled with its row unread stays unfinished (a plain
        # UPDATE is done, and reset, by the time the driver returns).
        await session.execute(
            text("UPDATE jobs SET progress = 0.5 WHERE id = :id RETURNING id"), {"id": ctx.job_id}
        )
        await session.commit()
    return {"ok": True}


@pytest.fixture
async def slow_progress(tmp_path):
    """A SQLite database whose progress writes take PAUSE seconds inside the statement; writers
    wait at most 2 s for the lock (busy timeout), as a loaded machine can make them."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", connect_timeout=2)
    await migrations.upgrade(engine, "head")
    paused = threading.Lock()

    def pause() -> int:
        if paused.acquire(blocking=False):  # the first progress write only
            progress_writing.set()
            time.sleep(PAUSE)
        return 0

    @event.listens_for(engine.sync_engine, "connect")
    def _functions(dbapi_connection, _record):
        dbapi_connection.create_function("test_pause", 0, pause)

    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE TRIGGER test_slow_progress AFTER UPDATE OF progress ON jobs "
                "WHEN NEW.progress = 0.5 BEGIN SELECT test_pause(); END"
            )
        )
    progress_writing.clear()
    yield engine
    await engine.dispose()


async def run_one(engine, settings, kind: str) -> tuple[str | None, Job]:
    """Submit one job of `kind` and run it as a pool worker would: its status and its row
    afterwards. A job's end that waits on a lock left behind fails here with "database is
    locked" after the busy timeout."""
    runtime = build_runtime(settings, Recorder(), engine=engine)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        org_id = await org_on(session, "enterprise")
        submitted = await service.submit(
            session, runtime.dispatcher, registry.kinds[kind], {}, org_id=org_id, created_by=None
        )
    try:
        status = await runtime.run(submitted.job.id)
    finally:
        await runtime.statements.close()
        await runtime.dispatcher.close(executor=False)
    async with sessionmaker() as session:
        job = (await session.execute(select(Job).where(Job.id == submitted.job.id))).scalar_one()
    return status, job


async def test_a_job_that_ends_during_a_heartbeat_write_gets_its_end_written(
    slow_progress, make_settings
):
    settings = make_settings(jobs={"executor": "local", "heartbeat_seconds": 0.05})
    status, job = await run_one(slow_progress, settings, "test.ends_during_a_heartbeat")
    assert progress_writing.is_set()
    assert status == "succeeded"
    assert (job.status, job.attempt, job.progress_message) == ("succeeded", 1, "half way")


async def test_a_handler_cancelled_inside_a_statement_still_gets_its_end_written(
    slow_progress, make_settings
):
    settings = make_settings(
        jobs={"executor": "local", "heartbeat_seconds": 5, "time_limit_grace_seconds": 0.5}
    )
    status, job = await run_one(slow_progress, settings, "test.cancelled_inside_a_statement")
    assert progress_writing.is_set()  # the time limit fell inside the statement (0.7-1.3 s)
    assert status == "failed"
    assert (job.status, job.attempt) == ("failed", 1)
    assert job.error["type"] == "/problems/job-time-limit"
