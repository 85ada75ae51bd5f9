"""A job's end never waits on its own heartbeat.

On SQLite, a task cancelled while its statement runs leaves that statement unfinished: SQLAlchemy
discards the connection, but SQLite keeps it, and its write lock, until the garbage collector
frees the statement. A heartbeat cancelled in the middle of its write, as the handler returned,
then held the lock for seconds, and the job's end failed with "database is locked" (the sweeper
ran the job again). The heartbeat must stop between two writes, never in one.
"""

import threading
import time

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

# Set by the database while the heartbeat's write runs (held there for PAUSE seconds).
heartbeat_writing = threading.Event()
PAUSE = 0.6


class Nothing(BaseModel):
    pass


@registry.kind("test.ends_during_a_heartbeat", payload=Nothing, max_attempts=1)
def ends_during_a_heartbeat(ctx: JobContext, payload: Nothing) -> dict:
    ctx.progress(0.5, "half way")  # the heartbeat writes this out shortly
    if not heartbeat_writing.wait(10):
        raise AssertionError("the heartbeat never wrote the progress")
    return {"ok": True}  # while the heartbeat's statement still runs


@pytest.fixture
async def slow_heartbeats(tmp_path):
    """A SQLite database whose progress writes take PAUSE seconds inside the statement; writers
    wait at most 2 s for the lock (busy timeout), as a loaded machine can make them."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", connect_timeout=2)
    await migrations.upgrade(engine, "head")
    paused = threading.Lock()

    def pause() -> int:
        if paused.acquire(blocking=False):  # the first progress write only
            heartbeat_writing.set()
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
    heartbeat_writing.clear()
    yield engine
    await engine.dispose()


async def test_a_job_that_ends_during_a_heartbeat_write_is_finished_at_once(
    slow_heartbeats, make_settings
):
    engine = slow_heartbeats
    settings = make_settings(jobs={"executor": "local", "heartbeat_seconds": 0.05})
    runtime = build_runtime(settings, Recorder(), engine=engine)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        org_id = await org_on(session, "enterprise")
        submitted = await service.submit(
            session,
            runtime.dispatcher,
            registry.kinds["test.ends_during_a_heartbeat"],
            {},
            org_id=org_id,
            created_by=None,
        )
    try:
        began = time.monotonic()
        status = await runtime.run(submitted.job.id)
        took = time.monotonic() - began
    finally:
        await runtime.statements.close()
        await runtime.dispatcher.close(executor=False)
    assert heartbeat_writing.is_set()
    assert status == "succeeded"
    async with sessionmaker() as session:
        job = (await session.execute(select(Job).where(Job.id == submitted.job.id))).scalar_one()
    assert (job.status, job.attempt, job.progress_message) == ("succeeded", 1, "half way")
    # The end waited for the heartbeat's write, not for a lock left behind.
    assert took < 0.25 + PAUSE + 1.5, took
